-- Optional token limits beside a key's spend limit (issue 17): input and output tokens counted
-- in the same window as the spend. NULL: no token limit.
ALTER TABLE api_keys ADD COLUMN budget_token_limit BIGINT;
