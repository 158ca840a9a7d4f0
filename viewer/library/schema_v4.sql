-- Upgrade 3 -> 4: our saved readings (viewer.reading.persist).  One row per reading object we wrote (GSPS, SR, KOS):
-- which study and kind, the image series a presentation state applies to ('' for SR and KOS), and whether it was
-- sent to a PACS (a sent one is never replaced in place: the next save makes a new instance).  UIDs only.
CREATE TABLE IF NOT EXISTS reading_drafts (
    sop_instance_uid TEXT PRIMARY KEY,
    study_uid        TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('PR', 'SR', 'KO')),
    image_series_uid TEXT NOT NULL DEFAULT '',
    sent             INTEGER NOT NULL DEFAULT 0,
    updated_at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reading_drafts_by_study ON reading_drafts(study_uid);
