-- A site's active slices, counted on its row by a trigger, so that creating a slice checks the
-- site's max_slices in the one statement that inserts it: the site's row is locked only while
-- that statement runs (before, a transaction held it across three round trips, and creations in
-- one site queued behind each other). The trigger refuses a slice over the quota.
ALTER TABLE sites ADD COLUMN active_slices integer NOT NULL DEFAULT 0;

UPDATE sites SET active_slices = (SELECT count(*) FROM slices WHERE slices.site = sites.login_base AND slices.state = 'active');

CREATE FUNCTION planetlite_count_active_slices() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  left_over integer;
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.state = 'active' THEN
    UPDATE sites SET active_slices = active_slices - 1 WHERE login_base = OLD.site;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.state = 'active' THEN
    -- The UPDATE waits for and then reads the latest committed count (not the statement's snapshot).
    UPDATE sites SET active_slices = active_slices + 1 WHERE login_base = NEW.site
      RETURNING max_slices - active_slices INTO left_over;
    IF TG_OP = 'INSERT' AND left_over < 0 THEN
      RAISE EXCEPTION USING ERRCODE = 'PLQ01', MESSAGE = format('site %s may have at most %s slices', NEW.site, (SELECT max_slices FROM sites WHERE login_base = NEW.site));
    END IF;
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER slices_count_active AFTER INSERT OR UPDATE OF state OR DELETE ON slices
  FOR EACH ROW EXECUTE FUNCTION planetlite_count_active_slices();
