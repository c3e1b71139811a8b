-- Where a node stands, as its site (tech or pi) or an admin says: {city, latitude, longitude};
-- null when nobody said. The admin's map in the dashboard draws the nodes that have one.
ALTER TABLE nodes ADD COLUMN location jsonb;
