-- The pipeline's state: tables `queue`, `build` and `fact`, and the request's `build_strategy` and
-- `base_uri`. Like 0001, every statement is idempotent and the file runs as it stands, every time
-- (`stovepipe migrate URL`, or `mysql DATABASE < 0002_pipeline.sql` after 0001). A database made by
-- 0001 alone is upgraded in place: its rows stay, and its requests read back with the new columns
-- at their defaults (no build strategy chosen, no base).
--
-- Keys and texts are VARBINARY holding UTF-8 bytes, as wide as the byte limits of
-- stovepipe.storage.limits, for the reasons 0001 gives. The fact's key is its three columns in
-- full (1479 bytes, within DYNAMIC's 3072-byte index key limit), never a prefix, so two distinct
-- (queue, uri, project) triples never share a key whatever separators or NUL bytes they hold.
-- `degree` and `created_at` are DOUBLE: the client sends Python's shortest round-trip
-- representation, which the server parses correctly rounded, and the server returns a DOUBLE
-- column in its shortest round-trip form, so a float reads back as the very same float (tested).

CREATE TABLE IF NOT EXISTS queue (
    name                  VARBINARY(200)  NOT NULL,
    latest_request_id     VARBINARY(255)  NOT NULL,
    last_green_uri        VARBINARY(1024) NOT NULL,
    last_green_request_id VARBINARY(255)  NOT NULL,
    in_flight             BIGINT          NOT NULL,
    version               BIGINT          NOT NULL,
    PRIMARY KEY (name)
) ENGINE = InnoDB ROW_FORMAT = DYNAMIC;

CREATE TABLE IF NOT EXISTS build (
    id         VARBINARY(255)  NOT NULL,
    request_id VARBINARY(255)  NOT NULL,
    status     VARBINARY(32)   NOT NULL,
    log        VARBINARY(1024) NOT NULL,
    version    BIGINT          NOT NULL,
    PRIMARY KEY (id)
) ENGINE = InnoDB ROW_FORMAT = DYNAMIC;

CREATE TABLE IF NOT EXISTS fact (
    queue      VARBINARY(200)  NOT NULL,
    uri        VARBINARY(1024) NOT NULL,
    project    VARBINARY(255)  NOT NULL,
    degree     DOUBLE          NOT NULL,
    request_id VARBINARY(255)  NOT NULL,
    created_at DOUBLE          NOT NULL,
    PRIMARY KEY (queue, uri, project)
) ENGINE = InnoDB ROW_FORMAT = DYNAMIC;

-- The request's new columns. MySQL has no ADD COLUMN IF NOT EXISTS (MariaDB has), so each ALTER
-- is chosen from information_schema and run as a prepared statement: the ALTER when the column
-- is missing, a no-op (DO 0) when it is there. A named lock makes the look and the ALTER one step
-- against another migration running at the same moment, which would otherwise find the column
-- missing too and fail adding it twice; the lock is released at the end, or when the session
-- ends if a statement fails. The defaults ('') let a version that does not know the columns yet
-- keep inserting requests during a rolling upgrade.
DO GET_LOCK('stovepipe.migrate', 60);

SET @stovepipe_migrate = (
    SELECT IF(COUNT(*) = 0,
              'ALTER TABLE request ADD COLUMN build_strategy VARBINARY(32) NOT NULL DEFAULT ''''',
              'DO 0')
    FROM information_schema.COLUMNS
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'request' AND COLUMN_NAME = 'build_strategy'
);
PREPARE stovepipe_migrate FROM @stovepipe_migrate;
EXECUTE stovepipe_migrate;
DEALLOCATE PREPARE stovepipe_migrate;

SET @stovepipe_migrate = (
    SELECT IF(COUNT(*) = 0,
              'ALTER TABLE request ADD COLUMN base_uri VARBINARY(1024) NOT NULL DEFAULT ''''',
              'DO 0')
    FROM information_schema.COLUMNS
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'request' AND COLUMN_NAME = 'base_uri'
);
PREPARE stovepipe_migrate FROM @stovepipe_migrate;
EXECUTE stovepipe_migrate;
DEALLOCATE PREPARE stovepipe_migrate;

SET @stovepipe_migrate = NULL;
DO RELEASE_LOCK('stovepipe.migrate');
