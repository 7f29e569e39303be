-- One schema for both backends: only types and syntax that SQLite and
-- PostgreSQL read the same way. Times are epoch milliseconds (BIGINT).

CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    email         TEXT NOT NULL UNIQUE,          -- stored lowercased
    password_hash TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    avatar_url    TEXT,
    city          TEXT,
    role          TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,        -- SHA-256 of the token; the token itself is never stored
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    rotated_at BIGINT,                           -- set when exchanged for a new pair; reuse after this is theft
    revoked_at BIGINT                            -- set by logout or by reuse detection
);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

CREATE TABLE issues (
    id          TEXT PRIMARY KEY NOT NULL,
    title       TEXT NOT NULL,
    description TEXT NOT NULL,
    city        TEXT NOT NULL,
    category    TEXT NOT NULL,
    priority    TEXT NOT NULL,
    status      TEXT NOT NULL,
    upvotes     BIGINT NOT NULL DEFAULT 0,
    reported_by TEXT NOT NULL REFERENCES users(id),
    assigned_to TEXT REFERENCES users(id),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX issues_top ON issues (upvotes, id);
CREATE INDEX issues_city ON issues (city, id);
CREATE INDEX issues_reported_by ON issues (reported_by, id);
CREATE INDEX issues_assigned_to ON issues (assigned_to, id);

CREATE TABLE upvotes (
    issue_id   TEXT NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (issue_id, user_id)
);

CREATE TABLE messages (
    id         TEXT PRIMARY KEY NOT NULL,
    issue_id   TEXT NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    author_id  TEXT NOT NULL REFERENCES users(id),
    content    TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX messages_issue ON messages (issue_id, id);

CREATE TABLE reactions (
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    emoji      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (message_id, user_id, emoji)
);
