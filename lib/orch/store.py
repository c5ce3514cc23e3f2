"""The SQLite store: one database, orch.db, in the state directory.

Rules (why each pragma):
- journal_mode=WAL: readers never block the writer, so `list` and `orch-dash`
  run while a pass delivers.
- synchronous=FULL: a task that `add` reported is on disk even after a power
  loss, not only after a crash of the process.
- busy_timeout: concurrent writers wait their turn instead of failing at once;
  past it the caller gets exit 75 (try again).
- foreign_keys=ON: attempts cannot outlive their task.
- Connections are in autocommit mode; every write is an explicit transaction
  (tx()), BEGIN IMMEDIATE so the write lock is taken before anything is read.
- Schema changes are numbered migrations applied at open inside BEGIN
  IMMEDIATE, re-checking PRAGMA user_version once the lock is held, so many
  processes opening a new store at once is safe.  A database that cannot be
  read is reported and never recreated over the user's data.
"""

import os
import sqlite3

from . import paths
from .errors import IOERR, TEMPFAIL, OrchError

DB_NAME = "orch.db"
BUSY_TIMEOUT = 5.0

# Numbered migrations; index i holds the SQL taking user_version i to i+1.
# Never edit a migration that has shipped: append a new one.
MIGRATIONS = [
    # 1: check-ins and their delivery log
    """
    CREATE TABLE tasks (
        id          INTEGER PRIMARY KEY,
        target      TEXT NOT NULL,
        server      TEXT NOT NULL,
        note        TEXT NOT NULL,
        due         REAL NOT NULL,
        every_s     REAL,
        key         TEXT,
        account     TEXT NOT NULL DEFAULT 'default',
        status      TEXT NOT NULL DEFAULT 'pending',
        attempts    INTEGER NOT NULL DEFAULT 0,
        not_before  REAL NOT NULL,
        lease_until REAL,
        reason      TEXT,
        created     REAL NOT NULL,
        updated     REAL NOT NULL
    );
    CREATE UNIQUE INDEX tasks_live_key ON tasks(key)
        WHERE key IS NOT NULL AND status IN ('pending', 'running');
    CREATE INDEX tasks_status_next ON tasks(status, not_before);
    CREATE TABLE attempts (
        id       INTEGER PRIMARY KEY,
        task_id  INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        at       REAL NOT NULL,
        due      REAL NOT NULL,
        target   TEXT NOT NULL,
        pane     TEXT,
        outcome  TEXT NOT NULL,
        detail   TEXT
    );
    CREATE INDEX attempts_task ON attempts(task_id, at);
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT
    );
    """,
    # 2: reliability: per-task catch-up policy and retry cap; whether the
    # current occurrence was already picked up by a pass (then never skipped)
    """
    ALTER TABLE tasks ADD COLUMN catch_up TEXT NOT NULL DEFAULT 'once';
    ALTER TABLE tasks ADD COLUMN grace_s REAL NOT NULL DEFAULT 600;
    ALTER TABLE tasks ADD COLUMN retries INTEGER NOT NULL DEFAULT 5;
    ALTER TABLE tasks ADD COLUMN picked INTEGER NOT NULL DEFAULT 0;
    UPDATE tasks SET picked = 1 WHERE attempts > 0;
    CREATE INDEX attempts_at ON attempts(at);
    CREATE INDEX tasks_target ON tasks(target, server, status, not_before)
    """,
    # 3: orchestrations (orch-lock new/ls/end/prune): one row per run of an agent
    # team; status is 'open' or 'ended' (by `end`); gone_since is when a prune
    # first found its tmux session gone
    """
    CREATE TABLE orchestrations (
        session    TEXT PRIMARY KEY,
        project    TEXT NOT NULL,
        server     TEXT NOT NULL,
        dir        TEXT NOT NULL,
        status     TEXT NOT NULL DEFAULT 'open',
        created    REAL NOT NULL,
        ended      REAL,
        gone_since REAL
    );
    """,
    # 4: orch-sync: the repositories it serves (hooks NULL: not installed), what
    # the last pass found per worktree (state synced/updated/skipped/conflict),
    # predicted conflicts per pair of branches (status open/resolved, notified =
    # the files each side was told about), merge predictions by commit pair, and
    # the tmux target of each worktree's agent
    """
    CREATE TABLE sync_repos (
        repo       TEXT PRIMARY KEY,
        top        TEXT NOT NULL,
        bare       INTEGER NOT NULL DEFAULT 0,
        hooks      TEXT,
        base       TEXT,
        policy     TEXT,
        remote     TEXT,
        remote_url TEXT,
        last_pass  REAL,
        last_event REAL,
        error      TEXT,
        updated    REAL NOT NULL
    );
    CREATE TABLE sync_worktrees (
        repo      TEXT NOT NULL,
        path      TEXT NOT NULL,
        branch    TEXT,
        head      TEXT,
        base      TEXT,
        ahead     INTEGER,
        behind    INTEGER,
        dirty     INTEGER,
        state     TEXT NOT NULL,
        reason    TEXT,
        files     TEXT,
        action    TEXT,
        checked   REAL NOT NULL,
        last_sync REAL,
        PRIMARY KEY (repo, path)
    );
    CREATE TABLE sync_conflicts (
        repo       TEXT NOT NULL,
        a          TEXT NOT NULL,
        b          TEXT NOT NULL,
        a_head     TEXT NOT NULL,
        b_head     TEXT NOT NULL,
        a_worktree TEXT,
        b_worktree TEXT,
        files      TEXT NOT NULL,
        status     TEXT NOT NULL,
        notified   TEXT,
        first_seen REAL NOT NULL,
        last_seen  REAL NOT NULL,
        PRIMARY KEY (repo, a, b)
    );
    CREATE TABLE sync_predictions (
        a     TEXT NOT NULL,
        b     TEXT NOT NULL,
        files TEXT NOT NULL,
        at    REAL NOT NULL,
        PRIMARY KEY (a, b)
    );
    CREATE INDEX sync_predictions_at ON sync_predictions(at);
    CREATE TABLE sync_targets (
        worktree TEXT PRIMARY KEY,
        target   TEXT NOT NULL,
        server   TEXT NOT NULL,
        created  REAL NOT NULL
    );
    """,
    # 5: usage limits: accounts suspended while their agents are out of
    # credits (state ok/suspended; since..until is the latest suspension,
    # kept after it ends), and the panes found limited, each resumed once
    """
    CREATE TABLE accounts (
        name        TEXT PRIMARY KEY,
        state       TEXT NOT NULL DEFAULT 'ok',
        since       REAL,
        until       REAL,
        reset       REAL,
        kind        TEXT,
        how         TEXT,
        backoff_s   REAL,
        resume_note TEXT,
        updated     REAL NOT NULL
    );
    CREATE TABLE limited_panes (
        account TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
        server  TEXT NOT NULL,
        pane    TEXT NOT NULL,
        target  TEXT NOT NULL,
        state   TEXT NOT NULL DEFAULT 'waiting',
        seen    REAL NOT NULL,
        PRIMARY KEY (account, server, pane)
    );
    """,
    # 6: deferrals: a due check-in whose pane showed a dialog, a busy agent or a
    # draft is put back untried; deferred is the pane state it waits on (NULL:
    # not deferred) and deferred_since when that wait began.  typed is when
    # this occurrence's note was last pasted into its pane (NULL: not since it
    # became due), so that the runner after a crash or a lost Enter looks for
    # it on screen before typing anything
    """
    ALTER TABLE tasks ADD COLUMN deferred TEXT;
    ALTER TABLE tasks ADD COLUMN deferred_since REAL;
    ALTER TABLE tasks ADD COLUMN typed REAL;
    """,
    # 7: indexes for the hot paths at any size (tasks.py): the overdue count,
    # the next wake-up by account and by lease, and claims per target and
    # status in (not_before, id) order
    """
    CREATE INDEX tasks_overdue ON tasks(due + grace_s)
        WHERE status = 'pending' AND picked = 0 AND deferred IS NULL;
    CREATE INDEX tasks_account ON tasks(account, status, not_before);
    CREATE INDEX tasks_lease ON tasks(status, lease_until);
    """,
    # 8: the check-ins waiting on a pane past their grace (tasks.waiting), read
    # from the few deferred ones, never from every pending one
    """
    CREATE INDEX tasks_waiting ON tasks(deferred_since + grace_s)
        WHERE status = 'pending' AND deferred IS NOT NULL;
    """,
    # 9: how many live check-ins each (target, server) has, kept by triggers in
    # the transaction of every change to tasks, so that the status line reads
    # one small table whatever the store holds (tasks.live_per_target)
    """
    CREATE TABLE live_counts (
        target TEXT NOT NULL,
        server TEXT NOT NULL,
        n      INTEGER NOT NULL CHECK (n > 0),
        PRIMARY KEY (target, server)
    ) WITHOUT ROWID;
    INSERT INTO live_counts SELECT target, server, COUNT(*) FROM tasks
        WHERE status IN ('pending', 'running') GROUP BY target, server;
    CREATE TRIGGER live_counts_insert AFTER INSERT ON tasks
        WHEN NEW.status IN ('pending', 'running')
    BEGIN
        INSERT INTO live_counts VALUES (NEW.target, NEW.server, 1)
            ON CONFLICT (target, server) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER live_counts_delete AFTER DELETE ON tasks
        WHEN OLD.status IN ('pending', 'running')
    BEGIN
        DELETE FROM live_counts WHERE target = OLD.target AND server = OLD.server AND n = 1;
        UPDATE live_counts SET n = n - 1 WHERE target = OLD.target AND server = OLD.server;
    END;
    CREATE TRIGGER live_counts_update AFTER UPDATE OF status, target, server ON tasks
        WHEN (OLD.status IN ('pending', 'running')) != (NEW.status IN ('pending', 'running'))
            OR (NEW.status IN ('pending', 'running')
                AND (OLD.target IS NOT NEW.target OR OLD.server IS NOT NEW.server))
    BEGIN
        DELETE FROM live_counts WHERE OLD.status IN ('pending', 'running')
            AND target = OLD.target AND server = OLD.server AND n = 1;
        UPDATE live_counts SET n = n - 1 WHERE OLD.status IN ('pending', 'running')
            AND target = OLD.target AND server = OLD.server;
        INSERT INTO live_counts SELECT NEW.target, NEW.server, 1
            WHERE NEW.status IN ('pending', 'running')
            ON CONFLICT (target, server) DO UPDATE SET n = n + 1;
    END;
    """,
    # 10: orch-team: one row per team brought up (status starting, up or down),
    # known by its team file's real path; plan is JSON: everything its up made
    """
    CREATE TABLE teams (
        session TEXT PRIMARY KEY,
        file    TEXT NOT NULL,
        project TEXT NOT NULL,
        server  TEXT NOT NULL,
        status  TEXT NOT NULL,
        plan    TEXT NOT NULL,
        created REAL NOT NULL,
        ended   REAL
    );
    CREATE INDEX teams_file ON teams(file, status);
    """,
]


def db_path():
    return os.path.join(paths.state_dir(), DB_NAME)


def connect(path=None, migrate=True, durable=True):
    """Open the store (creating and migrating it as needed) and return the connection.

    durable=False (synchronous=NORMAL) is for delivery passes: in WAL mode a
    commit then survives a crash of the process but may be undone by a power
    loss, which at worst repeats one delivery (the documented crash window),
    and it keeps the many short claim/finish transactions of a pass cheap.
    """
    path = path or db_path()
    if os.path.islink(path):
        raise OrchError(f"{path} is a symbolic link; refusing to open it", IOERR)
    if not os.path.exists(path):
        # Create the file ourselves so it is 0600 from the first byte.
        os.close(paths.open_private(path, os.O_RDWR | os.O_CREAT))
    else:
        # A stat, never an open: closing any descriptor of the file would drop
        # the POSIX locks SQLite holds through this process's other connections.
        paths.check_private(path)
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != len(MIGRATIONS) and migrate:
            _migrate(conn)
        elif version > len(MIGRATIONS):
            raise OrchError(f"{path} was written by a newer orch (schema {version}); "
                            "upgrade orch to use it", IOERR)
    except sqlite3.Error as e:
        raise translate(e, path) from None
    conn.row_factory = sqlite3.Row
    return conn


def _migrate(conn):
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        conn.execute("PRAGMA journal_mode=WAL")
    with tx(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise OrchError(f"the database was written by a newer orch (schema {version})", IOERR)
        for number in range(version, len(MIGRATIONS)):
            for statement in _statements(MIGRATIONS[number]):
                conn.execute(statement)
        # PRAGMA cannot take parameters; the value is our own integer.
        conn.execute(f"PRAGMA user_version={len(MIGRATIONS)}")


def _statements(script):
    # executescript() would COMMIT our transaction; split into statements
    # instead, a ';' ending one only where SQLite says the statement is complete
    # (a trigger's body holds several).
    out, part = [], ""
    for piece in script.split(";"):
        part += piece + ";"
        if sqlite3.complete_statement(part):
            if part.strip(" \n;"):
                out.append(part.strip())
            part = ""
    return out


class tx:
    """with tx(conn): BEGIN IMMEDIATE ... COMMIT, rolling back on any exception.

    (A class rather than contextlib.contextmanager: importing contextlib is a
    measurable part of a command's start-up.)
    """

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise translate(e) from None
        return self.conn

    def __exit__(self, kind, value, tb):
        if kind is not None:
            # SQLite may have rolled back already (a full disk, an interrupt): a
            # second ROLLBACK would raise and hide the error that got us here.
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            return False
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as e:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise translate(e) from None
        return False


def translate(e, path=None):
    """An sqlite3 error -> an OrchError with the documented exit status."""
    where = path or "the database"
    text = str(e)
    if isinstance(e, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return OrchError(f"{where} is busy (locked by another process); try again", TEMPFAIL)
    if isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.OperationalError):
        return OrchError(f"{where} cannot be read ({text}); it was left untouched", IOERR)
    return OrchError(f"{where}: {text}", IOERR)


def get_meta(conn, key, default=None):
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return default if row is None else row[0]


def set_meta(conn, key, value):
    """Set one meta value in its own short transaction (or the caller's, if one is open)."""
    sql = ("INSERT INTO meta(key, value) VALUES (?, ?) "
           "ON CONFLICT(key) DO UPDATE SET value = excluded.value")
    if conn.in_transaction:
        conn.execute(sql, (key, str(value)))
    else:
        with tx(conn):
            conn.execute(sql, (key, str(value)))
