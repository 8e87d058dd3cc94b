-- The sample's device store (domain.DeviceStore): the last status each
-- device reported.
CREATE TABLE device_status (
    device_id  text        PRIMARY KEY,
    online     boolean     NOT NULL,
    -- since is the time of the report, by the device's clock.
    since      timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
