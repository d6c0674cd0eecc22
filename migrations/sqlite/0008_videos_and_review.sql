-- What each downloaded video is, read from its MP4 boxes (src/mp4check): its size, frames,
-- frame rate, duration and codec; and how it differs from its request, if it does (a flag, not a
-- failure: the service decides what it delivers).
ALTER TABLE jobs ADD COLUMN video_width     INTEGER;
ALTER TABLE jobs ADD COLUMN video_height    INTEGER;
ALTER TABLE jobs ADD COLUMN video_frames    INTEGER;
ALTER TABLE jobs ADD COLUMN video_fps       REAL;
ALTER TABLE jobs ADD COLUMN video_duration  REAL;
ALTER TABLE jobs ADD COLUMN video_codec     TEXT;
ALTER TABLE jobs ADD COLUMN video_mismatch  TEXT;

-- A reviewer's decision on a video (`wanbatch review apply`): keep or reject, with a note; and
-- how many times a rejected video was taken again (`retry --rejected`).
ALTER TABLE jobs ADD COLUMN review              TEXT CHECK (review IN ('keep', 'reject'));
ALTER TABLE jobs ADD COLUMN review_note         TEXT;
ALTER TABLE jobs ADD COLUMN reviewed_at         INTEGER;
ALTER TABLE jobs ADD COLUMN resubmits_rejected  INTEGER NOT NULL DEFAULT 0;

-- The few videos that differ from their request, or that were reviewed: counted from here.
CREATE INDEX jobs_flags ON jobs (seq) WHERE video_mismatch IS NOT NULL OR review IS NOT NULL;
