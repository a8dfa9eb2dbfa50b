-- Live sync: where each source's change stream stands (a syncrepl cookie, an AD USN position),
-- stored once the runs covering the changes before it are recorded.
CREATE TABLE live_cookies (
    source     TEXT PRIMARY KEY NOT NULL,
    cookie     BLOB NOT NULL,
    updated_at TEXT NOT NULL
);
