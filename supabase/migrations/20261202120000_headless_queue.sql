-- The task queue: the same tables, indexes, NOTIFY trigger and claim function that source/store/ creates
-- on a direct PostgreSQL URL (schema version 3), plus `projects` and the idempotency key.
-- tests/test_supabase_sql.py checks that tasks/task_dependencies/workers/output_cache and headless_claim
-- here match what the store makes, so a worker given the database URL directly (`--db postgresql://...`)
-- finds the schema current and uses this very claim function.

-- Projects, as the seed's app has them: a task belongs to a project, a project to a user.
CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY DEFAULT gen_random_uuid()::text,
    user_id uuid NOT NULL DEFAULT auth.uid() REFERENCES auth.users (id) ON DELETE CASCADE,
    name TEXT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_projects_user ON projects (user_id);

-- The seed's 11 columns first, then ours (all with defaults: an insert naming seed columns only works).
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY DEFAULT gen_random_uuid()::text,
    task_type TEXT NOT NULL,
    params JSONB NOT NULL,
    status TEXT NOT NULL DEFAULT 'Queued',
    dependant_on TEXT NULL,
    output_location TEXT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    updated_at TIMESTAMPTZ NULL,
    generation_started_at TIMESTAMPTZ NULL,
    generation_processed_at TIMESTAMPTZ NULL,
    project_id TEXT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 3,
    not_before TIMESTAMPTZ NULL,
    worker_id TEXT NULL,
    lease_expires_at TIMESTAMPTZ NULL,
    heartbeat_at TIMESTAMPTZ NULL,
    error_message TEXT NULL,
    progress REAL NULL,
    progress_message TEXT NULL,
    result JSONB NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    timeout_seconds REAL NULL,
    parent_task_id TEXT NULL,
    completes_parent INTEGER NOT NULL DEFAULT 0,
    awaiting_children INTEGER NOT NULL DEFAULT 0,
    -- An app may retry an insert safely: the same key in the same project is the same task.
    idempotency_key TEXT NULL,
    CONSTRAINT tasks_status_known CHECK (status IN ('Queued', 'In Progress', 'Complete', 'Failed', 'Cancelled')),
    CONSTRAINT tasks_not_own_parent CHECK (dependant_on <> id),
    CONSTRAINT tasks_idempotency_key UNIQUE (project_id, idempotency_key)
);

CREATE TABLE IF NOT EXISTS task_dependencies (
    task_id TEXT NOT NULL,
    depends_on TEXT NOT NULL,
    PRIMARY KEY (task_id, depends_on),
    CONSTRAINT task_dependencies_not_own_parent CHECK (task_id <> depends_on)
);

CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    host TEXT NULL,
    pid INTEGER NULL,
    started_at TIMESTAMPTZ NULL,
    last_seen_at TIMESTAMPTZ NULL,
    current_task_id TEXT NULL,
    version TEXT NULL,
    status TEXT NULL
);

CREATE TABLE IF NOT EXISTS output_cache (
    cache_key TEXT PRIMARY KEY,
    output_location TEXT NOT NULL,
    task_id TEXT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS headless_schema (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);

-- The claim walks idx_tasks_ready in order and stops at the first ready row.
CREATE INDEX IF NOT EXISTS idx_tasks_ready ON tasks (priority DESC, created_at, id) WHERE status = 'Queued';
CREATE INDEX IF NOT EXISTS idx_tasks_lease ON tasks (lease_expires_at) WHERE status = 'In Progress';
CREATE INDEX IF NOT EXISTS idx_tasks_dependant_on ON tasks (dependant_on);
CREATE INDEX IF NOT EXISTS idx_tasks_parent ON tasks (parent_task_id);
CREATE INDEX IF NOT EXISTS idx_status_created ON tasks (status, created_at);
CREATE INDEX IF NOT EXISTS idx_task_dependencies_parent ON task_dependencies (depends_on);
CREATE INDEX IF NOT EXISTS idx_tasks_project ON tasks (project_id);

-- Workers listening on a direct connection wake at once; REST workers poll (Realtime sees the same
-- row updates, so an app can subscribe to status and progress).
CREATE OR REPLACE FUNCTION headless_notify_tasks() RETURNS trigger AS $$
    BEGIN
        PERFORM pg_notify('headless_tasks', '');
        RETURN NULL;
    END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS headless_tasks_notify ON tasks;
CREATE TRIGGER headless_tasks_notify AFTER INSERT OR UPDATE OF status ON tasks
       FOR EACH ROW WHEN (NEW.status IN ('Queued', 'Complete'))
       EXECUTE FUNCTION headless_notify_tasks();

-- The claim, exactly as source/store/sql.py writes it (checked by tests/test_supabase_sql.py): the best
-- ready task, FOR UPDATE SKIP LOCKED, in one statement. Not callable through the API itself (revoked
-- in the next migration); worker_claim() is the API's door to it.
CREATE OR REPLACE FUNCTION headless_claim(p_worker text, p_lease_seconds double precision, p_types text[]) RETURNS TABLE (id text, task_type text, params text, attempts integer, worker_id text, max_attempts integer, project_id text, priority integer, timeout_seconds double precision, parent_task_id text, completes_parent integer) LANGUAGE plpgsql SET enable_sort = off SET enable_bitmapscan = off AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY WITH candidate AS (SELECT t.id FROM tasks t LEFT JOIN tasks p ON p.id = t.dependant_on WHERE 
    t.status = 'Queued'
    AND (t.not_before IS NULL OR t.not_before <= now())
    AND (t.dependant_on IS NULL OR p.status = 'Complete')
    AND NOT EXISTS (
        SELECT 1 FROM task_dependencies d JOIN tasks q ON q.id = d.depends_on
        WHERE d.task_id = t.id AND q.status <> 'Complete')
    AND (p_types IS NULL OR t.task_type = ANY(p_types))
 ORDER BY t.priority DESC, t.created_at, t.id LIMIT 1 FOR UPDATE OF t SKIP LOCKED) UPDATE tasks SET 
    status = 'In Progress', worker_id = p_worker, attempts = attempts + 1,
    lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds), heartbeat_at = clock_timestamp(), generation_started_at = clock_timestamp(),
    updated_at = clock_timestamp(), progress = 0, progress_message = NULL, error_message = NULL
 FROM candidate WHERE tasks.id = candidate.id RETURNING tasks.id::text, tasks.task_type::text, tasks.params::text, tasks.attempts::integer, tasks.worker_id::text, tasks.max_attempts::integer, tasks.project_id::text, tasks.priority::integer, tasks.timeout_seconds::double precision, tasks.parent_task_id::text, tasks.completes_parent::integer;
END
$$;

-- A direct-URL worker (source/store/schema.py) finds schema version 3 and leaves all of this alone.
INSERT INTO headless_schema (name, version) VALUES ('tasks', 3)
    ON CONFLICT (name) DO UPDATE SET version = greatest(headless_schema.version, excluded.version);
