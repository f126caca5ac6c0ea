-- A person's id in the system a site imports from (an HR or badge system): re-importing
-- the same file finds the people it made instead of making them again. Unique per site.
ALTER TABLE people ADD COLUMN external_id TEXT;
CREATE UNIQUE INDEX people_external_id ON people (site, external_id) WHERE external_id IS NOT NULL;
