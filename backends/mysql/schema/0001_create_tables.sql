-- Stovepipe's three tables. Every statement is idempotent (IF NOT EXISTS): `stovepipe migrate URL`
-- runs this file as it stands, every time, as does `mysql DATABASE < 0001_create_tables.sql`.
--
-- Keys are VARBINARY holding the UTF-8 bytes of the value, so they compare byte for byte on every
-- MySQL and MariaDB server whatever its character-set settings: no case folding, no accent
-- folding, no PAD SPACE (trailing spaces and NUL bytes are significant). Column widths are the
-- byte limits of stovepipe.storage.limits. InnoDB and ROW_FORMAT=DYNAMIC are stated, not assumed:
-- the row locks make each single-statement write atomic, and the (queue, uri) key of 1224 bytes
-- needs DYNAMIC's 3072-byte index key limit.

CREATE TABLE IF NOT EXISTS request (
    id      VARBINARY(255)  NOT NULL,
    queue   VARBINARY(200)  NOT NULL,
    uri     VARBINARY(1024) NOT NULL,
    state   VARBINARY(32)   NOT NULL,
    version BIGINT          NOT NULL,
    PRIMARY KEY (id)
) ENGINE = InnoDB ROW_FORMAT = DYNAMIC;

-- (queue, uri) -> request id: the ingest dedup key. Two columns, so two distinct pairs never
-- share a key whatever separators they contain.
CREATE TABLE IF NOT EXISTS request_uri (
    queue      VARBINARY(200)  NOT NULL,
    uri        VARBINARY(1024) NOT NULL,
    request_id VARBINARY(255)  NOT NULL,
    PRIMARY KEY (queue, uri)
) ENGINE = InnoDB ROW_FORMAT = DYNAMIC;

-- One row per counter domain holding the last number handed out.
CREATE TABLE IF NOT EXISTS counter (
    domain  VARBINARY(255) NOT NULL,
    `value` BIGINT         NOT NULL,
    PRIMARY KEY (domain)
) ENGINE = InnoDB ROW_FORMAT = DYNAMIC;
