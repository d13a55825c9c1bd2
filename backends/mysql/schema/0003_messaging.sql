-- The messaging queue's tables (mysql:// messaging, stovepipe_mysql.messaging). Like 0001 and
-- 0002, every statement is idempotent and the file runs as it stands, every time, under the same
-- named lock (`stovepipe migrate URL`, or `mysql DATABASE < 0003_messaging.sql`).
--
-- Topics, keys, tokens and message ids are VARBINARY holding UTF-8 bytes: no PAD SPACE, no case
-- folding; a key is its exact bytes. The free-text columns (`last_error`, `reason`) are utf8mb4
-- whatever the database's default character set: in a latin1 or utf8mb3 database a failure
-- reason with a 4-byte character would otherwise fail the write that settles the message.
-- A message id is pending on its topic at most once: the unique key (topic, message_id) makes a
-- repeated publish a no-op (rows from before message ids hold NULL, which never collides).
DO GET_LOCK('stovepipe.migrate', 60);

CREATE TABLE IF NOT EXISTS stovepipe_queue_message (
    id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    topic         VARBINARY(255)  NOT NULL,
    partition_key VARBINARY(1024) NOT NULL,
    payload       LONGBLOB        NOT NULL,
    attempt       INT             NOT NULL DEFAULT 0,
    available_at  DOUBLE          NOT NULL,
    lease_token   VARBINARY(32)   NULL,
    lease_until   DOUBLE          NULL,
    last_error    TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    published_at  DOUBLE          NOT NULL,
    message_id    VARBINARY(255)  NULL,
    KEY stovepipe_queue_message_partition (topic, partition_key, id),
    UNIQUE KEY stovepipe_queue_message_id (topic, message_id)
) ENGINE = InnoDB ROW_FORMAT = DYNAMIC;

CREATE TABLE IF NOT EXISTS stovepipe_queue_dead_letter (
    id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    topic         VARBINARY(255)  NOT NULL,
    partition_key VARBINARY(1024) NOT NULL,
    payload       LONGBLOB        NOT NULL,
    attempt       INT             NOT NULL,
    reason        TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    published_at  DOUBLE          NOT NULL,
    dead_at       DOUBLE          NOT NULL,
    message_id    VARBINARY(255)  NULL,
    KEY stovepipe_queue_dead_letter_topic (topic, id)
) ENGINE = InnoDB ROW_FORMAT = DYNAMIC;

CREATE TABLE IF NOT EXISTS stovepipe_queue_key_lease (
    topic         VARBINARY(255)  NOT NULL,
    partition_key VARBINARY(1024) NOT NULL,
    lease_token   VARBINARY(32)   NOT NULL,
    lease_until   DOUBLE          NOT NULL,
    PRIMARY KEY (topic, partition_key)
) ENGINE = InnoDB ROW_FORMAT = DYNAMIC;

-- Tables made by earlier versions (created by the queue itself at start): add the message ids,
-- and make the free-text columns utf8mb4. Each ALTER is chosen from information_schema and run
-- as a prepared statement, as in 0002.
SET @stovepipe_migrate = (
    SELECT IF(COUNT(*) = 0,
              'ALTER TABLE stovepipe_queue_message ADD COLUMN message_id VARBINARY(255) NULL, ADD UNIQUE KEY stovepipe_queue_message_id (topic, message_id)',
              'DO 0')
    FROM information_schema.COLUMNS
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'stovepipe_queue_message'
      AND COLUMN_NAME = 'message_id'
);
PREPARE stovepipe_migrate FROM @stovepipe_migrate;
EXECUTE stovepipe_migrate;
DEALLOCATE PREPARE stovepipe_migrate;

SET @stovepipe_migrate = (
    SELECT IF(COUNT(*) = 0,
              'ALTER TABLE stovepipe_queue_dead_letter ADD COLUMN message_id VARBINARY(255) NULL',
              'DO 0')
    FROM information_schema.COLUMNS
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'stovepipe_queue_dead_letter'
      AND COLUMN_NAME = 'message_id'
);
PREPARE stovepipe_migrate FROM @stovepipe_migrate;
EXECUTE stovepipe_migrate;
DEALLOCATE PREPARE stovepipe_migrate;

SET @stovepipe_migrate = (
    SELECT IF(COUNT(*) = 0,
              'DO 0',
              'ALTER TABLE stovepipe_queue_message MODIFY last_error TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL')
    FROM information_schema.COLUMNS
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'stovepipe_queue_message'
      AND COLUMN_NAME = 'last_error' AND CHARACTER_SET_NAME <> 'utf8mb4'
);
PREPARE stovepipe_migrate FROM @stovepipe_migrate;
EXECUTE stovepipe_migrate;
DEALLOCATE PREPARE stovepipe_migrate;

SET @stovepipe_migrate = (
    SELECT IF(COUNT(*) = 0,
              'DO 0',
              'ALTER TABLE stovepipe_queue_dead_letter MODIFY reason TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL')
    FROM information_schema.COLUMNS
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'stovepipe_queue_dead_letter'
      AND COLUMN_NAME = 'reason' AND CHARACTER_SET_NAME <> 'utf8mb4'
);
PREPARE stovepipe_migrate FROM @stovepipe_migrate;
EXECUTE stovepipe_migrate;
DEALLOCATE PREPARE stovepipe_migrate;

SET @stovepipe_migrate = NULL;
DO RELEASE_LOCK('stovepipe.migrate');
