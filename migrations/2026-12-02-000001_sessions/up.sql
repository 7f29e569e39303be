-- One id per sign-in, kept by every refresh token rotated from it and
-- carried by its access tokens (claim `sid`), so that a logout can revoke
-- the session's access tokens too. Rows from before have none.
ALTER TABLE refresh_tokens ADD COLUMN session_id TEXT;
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);
