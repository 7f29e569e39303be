DROP TABLE reactions;
DROP TABLE messages;
DROP TABLE upvotes;
DROP TABLE issues;
DROP TABLE refresh_tokens;
DROP TABLE users;
