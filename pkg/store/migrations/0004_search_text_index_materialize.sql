-- Builds idx_search_tokens (0003) for the parts written before it existed; new parts get it when
-- written. A background mutation: it writes only the index files, and a search meanwhile reads the
-- parts that still lack it in full.
ALTER TABLE events MATERIALIZE INDEX idx_search_tokens
