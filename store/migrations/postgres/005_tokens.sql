-- 005_tokens: WeCom access tokens shared by the instances of a deployment,
-- so that one of them fetches a token while the others wait and use it
-- (WeCom blocks frequent gettoken calls). Writer and reader: SharedToken.
-- A row is replaced when its token expires or WeCom refuses it.
CREATE TABLE tokens (
    key         TEXT    PRIMARY KEY,   -- corp and app the token is for
    token       TEXT    NOT NULL,
    fetched_at  BIGINT  NOT NULL,      -- unix ms, when its fetch started
    expires_at  BIGINT  NOT NULL       -- unix ms, when to stop using it
);
