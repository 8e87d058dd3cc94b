-- The test service's device status: the last report of each device, and
-- how many times its status changed (each change published one
-- DeviceStatusChanged, which the end-to-end tests count).
CREATE TABLE device_status (
    device_id  text        PRIMARY KEY,
    online     boolean     NOT NULL,
    -- at is the time of the last report, by the device's clock.
    at         timestamptz NOT NULL,
    -- changed_at is the time of the report that set the current status.
    changed_at timestamptz NOT NULL,
    -- changes counts the status changes, the first report included.
    changes    integer     NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
