-- acq: the address each meter was last heard from, so that a push without system title can
-- be matched against the meters last seen at its address (besides their allowlists)
ALTER TABLE meters ADD COLUMN last_address TEXT;
