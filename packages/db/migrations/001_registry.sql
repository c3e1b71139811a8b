-- The registry's first schema: sites, users and their credentials, nodes, slices, slivers, events.

CREATE TABLE sites (
  login_base   text PRIMARY KEY,
  name         text NOT NULL,
  max_slices   integer NOT NULL CHECK (max_slices >= 0),
  max_slivers  integer NOT NULL CHECK (max_slivers >= 0),
  enabled      boolean NOT NULL DEFAULT true,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
  id            uuid PRIMARY KEY,
  email         text NOT NULL UNIQUE,
  name          text NOT NULL,
  password_hash text NOT NULL,
  site          text REFERENCES sites (login_base),
  roles         text[] NOT NULL DEFAULT '{}',
  created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ssh_keys (
  id          uuid PRIMARY KEY,
  user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  type        text NOT NULL,
  key         text NOT NULL,
  fingerprint text NOT NULL,
  comment     text NOT NULL DEFAULT '',
  created_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (user_id, fingerprint)
);

CREATE TABLE auth_tokens (
  token_hash text PRIMARY KEY,
  user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  expires_at timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE nodes (
  id           uuid PRIMARY KEY,
  site         text NOT NULL REFERENCES sites (login_base),
  hostname     text NOT NULL UNIQUE,
  address      text NOT NULL,
  key_hash     text NOT NULL UNIQUE,
  state        text NOT NULL DEFAULT 'offline' CHECK (state IN ('online', 'offline')),
  capabilities jsonb NOT NULL,
  resources    jsonb NOT NULL,
  port_first   integer NOT NULL,
  port_last    integer NOT NULL,
  images       jsonb NOT NULL DEFAULT '[]',
  last_seen    timestamptz,
  created_at   timestamptz NOT NULL DEFAULT now(),
  CHECK (port_first >= 1024 AND port_last <= 65535 AND port_first <= port_last)
);

CREATE TABLE enrollment_tokens (
  token_hash text PRIMARY KEY,
  site       text NOT NULL REFERENCES sites (login_base),
  created_by uuid REFERENCES users (id) ON DELETE SET NULL,
  expires_at timestamptz NOT NULL,
  used_at    timestamptz,
  node_id    uuid REFERENCES nodes (id) ON DELETE SET NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE slices (
  name        text PRIMARY KEY,
  site        text NOT NULL REFERENCES sites (login_base),
  state       text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'deleting')),
  description text NOT NULL DEFAULT '',
  url         text NOT NULL DEFAULT '',
  kind        text NOT NULL CHECK (kind IN ('lxc', 'kvm')),
  image       text NOT NULL,
  resources   jsonb NOT NULL,
  expires_at  timestamptz NOT NULL,
  created_by  uuid REFERENCES users (id) ON DELETE SET NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX slices_site ON slices (site);
CREATE INDEX slices_expiry ON slices (expires_at) WHERE state = 'active';

CREATE TABLE slice_members (
  slice   text NOT NULL REFERENCES slices (name) ON DELETE CASCADE,
  user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  added_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (slice, user_id)
);
CREATE INDEX slice_members_user ON slice_members (user_id);

CREATE TABLE slivers (
  id          uuid PRIMARY KEY,
  slice       text NOT NULL REFERENCES slices (name),
  site        text NOT NULL REFERENCES sites (login_base),
  node_id     uuid NOT NULL REFERENCES nodes (id),
  kind        text NOT NULL,
  state       text NOT NULL DEFAULT 'pending'
              CHECK (state IN ('pending', 'provisioning', 'running', 'stopped', 'failed', 'deleting')),
  desired     text NOT NULL DEFAULT 'running' CHECK (desired IN ('running', 'stopped', 'frozen', 'deleted')),
  restart_seq integer NOT NULL DEFAULT 0,
  reset_seq   integer NOT NULL DEFAULT 0,
  address     text,
  port_first  integer NOT NULL,
  port_last   integer NOT NULL,
  error       text,
  usage       jsonb,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (slice, node_id),
  UNIQUE (node_id, port_first)
);
CREATE INDEX slivers_node ON slivers (node_id);
CREATE INDEX slivers_site ON slivers (site);

CREATE TABLE events (
  id     bigserial PRIMARY KEY,
  at     timestamptz NOT NULL DEFAULT now(),
  type   text NOT NULL,
  slice  text,
  node   uuid,
  sliver uuid,
  data   jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX events_slice ON events (slice, id);
CREATE INDEX events_node ON events (node, id);

CREATE TABLE images (
  name       text PRIMARY KEY,
  sha256     text NOT NULL,
  size       bigint NOT NULL,
  kinds      text[] NOT NULL,
  infohash   text,
  magnet     text,
  created_at timestamptz NOT NULL DEFAULT now()
);
