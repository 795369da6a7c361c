-- Free-text search (Filter.Text: search_text LIKE '%…%') through a text (inverted) index instead of
-- the n-gram bloom filter: the index holds the tokens of search_text (split at every character that
-- is not a letter or digit) with their rows, and a LIKE is answered by scanning its token dictionary
-- for tokens that hold the pattern's pieces, so substring semantics are unchanged (ClickHouse still
-- checks the LIKE on the rows the index keeps). A bloom filter of 3-grams only said "maybe" per
-- granule: a rare id was read granule by granule through the whole organization; the posting lists
-- name the few granules that hold it. The text index costs an INSERT about what the n-gram filter
-- did (docs/benchmarks.md).
ALTER TABLE events
    ADD INDEX IF NOT EXISTS idx_search_tokens search_text TYPE text(tokenizer = splitByNonAlpha),
    DROP INDEX IF EXISTS idx_search_text
