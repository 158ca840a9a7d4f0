-- Local study store index, version 1.  Files live under objects/ with minted names; this index is the only
-- way an instance becomes visible.  Upgrades are numbered (PRAGMA user_version) and applied in order.
CREATE TABLE IF NOT EXISTS studies (
    study_uid        TEXT PRIMARY KEY,
    patient_name     TEXT NOT NULL DEFAULT '',
    patient_id       TEXT NOT NULL DEFAULT '',
    patient_birth_date TEXT NOT NULL DEFAULT '',
    patient_sex      TEXT NOT NULL DEFAULT '',
    study_date       TEXT NOT NULL DEFAULT '',
    study_time       TEXT NOT NULL DEFAULT '',
    accession_number TEXT NOT NULL DEFAULT '',
    study_description TEXT NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS series (
    series_uid       TEXT PRIMARY KEY,
    study_uid        TEXT NOT NULL REFERENCES studies(study_uid),
    modality         TEXT NOT NULL DEFAULT '',
    series_number    INTEGER,
    series_description TEXT NOT NULL DEFAULT '',
    body_part        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS series_by_study ON series(study_uid);

CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    series_uid       TEXT NOT NULL REFERENCES series(series_uid),
    sop_class_uid    TEXT NOT NULL DEFAULT '',
    instance_number  INTEGER,
    -- ImagePositionPatient and ImageOrientationPatient as backslash-separated decimals, '' when absent.
    image_position   TEXT NOT NULL DEFAULT '',
    image_orientation TEXT NOT NULL DEFAULT '',
    number_of_frames INTEGER NOT NULL DEFAULT 1,
    rows             INTEGER,
    columns          INTEGER,
    transfer_syntax_uid TEXT NOT NULL DEFAULT '',
    relpath          TEXT NOT NULL UNIQUE,
    size_bytes       INTEGER NOT NULL,
    sha256           TEXT NOT NULL,
    added_at         REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_series ON instances(series_uid);
