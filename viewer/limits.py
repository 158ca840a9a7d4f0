"""Every limit on data that comes from outside, in one place (no imports: the lean command-line path loads it).

A file, a PDU, an HTTP body or a JSON document is checked against one of these where it enters, before anything
is built from it; over the limit is a sentence (a MifasError), never a hang, a crash or a huge allocation.  The
modules that enforce a limit import it from here under the same name, and docs/architecture.md's limits table
says what each one bounds.  Limits on our own work (batch sizes, caches, worker counts) live with that work.
"""

from __future__ import annotations

# -- files (import, display) ------------------------------------------------------------------------------------
IMAGE_BYTES_MAX = 1 << 30  # decoded pixels of one instance (viewer.dicom.info)
HEADER_BYTES_MAX = 64 << 20  # a header, inflated if deflated, up to its pixel data (library.header, dicom.image)
FRAMES_PER_INSTANCE_MAX = 100_000  # Number of Frames believed, at most (and only as far as the file can hold)
WALK_FILES_MAX = 2_000_000  # files one import walks
SETTINGS_BYTES_MAX = 1 << 20  # a settings file (viewer.settings)
PROFILE_FILE_BYTES_MAX = 1 << 20  # a cluster profile file (viewer.pacs.cluster)

# -- scale and timing read from image headers (viewer.dicom.calibration, viewer.dicom.cine) -------------------------
# Estimated Radiographic Magnification Factor (SID / SOD) believed: below 1 is impossible, above 10 is not a radiograph.
MAGNIFICATION_FACTOR_RANGE = (1.0, 10.0)
US_REGIONS_MAX = 64  # items of a Sequence of Ultrasound Regions looked at
# One frame's time from a header (Frame Time, a Frame Time Vector step, 1/Recommended Display Frame Rate, 1/Cine
# Rate), in ms: 1 ms (1000 fps) to 10 s.  A 0, negative or larger value is ignored: cine never spins or stalls on it.
FRAME_INTERVAL_MS_RANGE = (1.0, 10_000.0)

# -- JSON (DICOMweb searches, Orthanc's REST, settings, profiles) ----------------------------------------------------
# DICOM JSON (PS3.18 F.2) nests two levels per sequence (the element's Value list, then the item); a search answer
# is a list of objects of elements.  64 levels hold some 30 nested sequences, far beyond real data.
JSON_DEPTH_MAX = 64
# Values (objects, arrays, strings, numbers) in one document, counted before it is parsed: each costs 50-100 bytes
# parsed, so a few bytes of text each ("{}," is three) could grow 64 MiB into gigabytes.  A search answer of 10,000
# matches holds some 600,000; four million parse to 400 MiB at most.
JSON_VALUES_MAX = 4_000_000
SYSTEM_ANSWER_BYTES_MAX = 64 << 10  # Orthanc's GET /system (the health monitor): a few hundred bytes
TOKEN_ANSWER_BYTES_MAX = 64 << 10  # an OAuth token endpoint's answer

# -- DIMSE ------------------------------------------------------------------------------------------------------------
MAX_PDU_BYTES = 4 << 20  # our Maximum Length (PS3.8 D.1): a longer PDU from the peer ends the association
# An A-ASSOCIATE-RQ proposing the 128 presentation contexts PS3.8 allows, each with a dozen transfer syntaxes, is
# about 40 KiB; pynetdicom's Storage SCP would read whatever length a peer announces (up to 4 GiB) first.
ASSOCIATE_RQ_BYTES_MAX = 256 << 10
# What restarts the silence clock on the lean association: a whole PDU, or this many bytes of one.  A peer that
# trickles its answer a few bytes at a time (slower than 64 KiB per dimse_s: 6.5 KB/s at a 10 s timeout) is silent.
PROGRESS_BYTES = 64 << 10
DATASET_BYTES_MAX = 2 << 30  # one instance received by C-GET (or a WADO-RS part); larger ones are refused
IDENTIFIER_BYTES_MAX = 1 << 20  # one C-FIND match
FIND_RESULTS_MAX = 10_000  # the default `limit` of a query
FIND_RESULTS_LIMIT_MAX = 1_000_000  # the largest `limit` a query accepts
SERIES_PER_STUDY_MAX = 10_000  # a planning listing; a flooded one stops the retrieval
PRIORS_MAX = 200  # prior studies one search lists (viewer.reading.priors), and matches one of its C-FINDs reads
INSTANCES_PER_SERIES_MAX = FIND_RESULTS_LIMIT_MAX

# -- HTTP (DICOMweb) -------------------------------------------------------------------------------------------------
QIDO_BYTES_MAX = 64 << 20  # a QIDO-RS JSON answer
PART_BYTES_MAX = DATASET_BYTES_MAX  # one WADO-RS part: a larger part is refused rather than buffered
PREAMBLE_BYTES_MAX = 64 << 10  # text before a multipart body's first boundary (RFC 2046 5.1.1)
PART_HEADERS_BYTES_MAX = 16 << 10  # one part's headers
# Parts in one WADO-RS answer: as many as a study may hold instances.  Every part is refused unless asked for, but
# a server that streams refusable parts for ever would otherwise never end the retrieval (it is never silent).
PARTS_PER_ANSWER_MAX = INSTANCES_PER_SERIES_MAX
SHOWN_CHARS_MAX = 80  # of a server-chosen text (a content type) quoted in a message

# -- secrets ------------------------------------------------------------------------------------------------------------
SECRET_LENGTH_MAX = 64 << 10  # a JWT with many claims fits; a file pasted by mistake does not

# -- hanging protocol rules files (viewer.reading.protocols, viewer.reading.protocol_files) -------------------------
# Each file is also bounded by SETTINGS_BYTES_MAX and the JSON limits above.
PROTOCOL_FILES_MAX = 64  # *.json files read from the system folder's protocols/
PROTOCOLS_PER_FILE_MAX = 256
DISPLAY_SETS_MAX = 16  # per protocol
ALTERNATIVES_MAX = 16  # of a study match or a viewport's series rule
PATTERNS_MAX = 32  # values in one criterion (globs, modalities, ...)
RULE_TEXT_CHARS_MAX = 128  # one name, glob or value

# -- saved readings (presentation states, SR, KOS; viewer.reading) -------------------------------------------------
READING_BYTES_MAX = 64 << 20  # a GSPS, SR or KOS file read back from the library: far beyond any real one
GRAPHIC_POINTS_MAX = 10_000  # points in one graphic object of a GSPS (a freehand outline has a few hundred)
GRAPHICS_PER_STATE_MAX = 20_000  # graphic and text objects in one GSPS, all images together
SR_CONTENT_ITEMS_MAX = 100_000  # content items in one SR document, counted through every nesting level
SR_DEPTH_MAX = 32  # nesting of SR content (TID 1500 needs 4 or 5 levels)
