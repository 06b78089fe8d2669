-- Fleet scheduling (issue 11), brought to a Supabase project: what source/store/ creates at schema version 5
-- on a direct PostgreSQL URL. tests/test_supabase_sql.py compares the result with a store-made database
-- (columns of every table, indexes, headless_claim, the model trigger), so a direct-URL worker finds the
-- schema current and uses these very objects.
--
-- * tasks: `model` (the catalog model the task loads, for model affinity; filled by the trigger below when
--   an insert leaves it out), `start_by` (not claimed by then: the task ends Failed), and one idempotency
--   rule: unique (COALESCE(project_id, ''), idempotency_key), replacing the first migration's
--   UNIQUE (project_id, idempotency_key), under which a NULL project never conflicted.
-- * workers.model; tables paused_scopes, project_limits, model_names (all RLS: the service role only;
--   signed-in users may read their own projects' pause and limit rows).
-- * headless_claim(worker, lease, types, model, max_wait): pauses, project limits, start_by, affinity;
--   headless_claim_for_user and worker_claim follow it (worker_claim returns `model` too).
-- * Worker functions: worker_set_model, worker_record_model_names, worker_expire_unstarted (the start_by
--   part of the sweep, for workers over HTTP); worker_register forgets the model (as the store does);
--   insert_task uses the new idempotency rule; worker_api_version() is 2.

-- ------------------------------------------------------------------ columns and tables
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS model TEXT NULL;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS start_by TIMESTAMPTZ NULL;
ALTER TABLE workers ADD COLUMN IF NOT EXISTS model TEXT NULL;

-- Paused scopes: '' means every type / every project. Claims skip Queued rows any scope covers.
CREATE TABLE IF NOT EXISTS paused_scopes (
    task_type TEXT NOT NULL DEFAULT '',
    project_id TEXT NOT NULL DEFAULT '',
    paused_at TIMESTAMPTZ NULL,
    PRIMARY KEY (task_type, project_id)
);
-- Fair shares: at most max_running tasks of the project In Progress. A project without a row is unlimited.
CREATE TABLE IF NOT EXISTS project_limits (
    project_id TEXT PRIMARY KEY,
    max_running INTEGER NOT NULL CHECK (max_running >= 0)
);
-- Model names and aliases (lower case) -> catalog name, written by service-role workers at start
-- (worker_record_model_names), so the trigger resolves aliases as the worker's insert path does.
CREATE TABLE IF NOT EXISTS model_names (
    name TEXT PRIMARY KEY,
    model TEXT NOT NULL
);

-- ------------------------------------------------------------------ one idempotency rule
ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_idempotency_key;
-- The old constraint let rows without a project (inserted with the service key) share a key. Under the new
-- rule the oldest keeps it; the later ones (never deduplicated by it anyway) lose the key, not the row.
DO $$
DECLARE
    n integer;
BEGIN
    UPDATE tasks t SET idempotency_key = NULL
        WHERE t.idempotency_key IS NOT NULL AND EXISTS (
            SELECT 1 FROM tasks o WHERE COALESCE(o.project_id, '') = COALESCE(t.project_id, '')
              AND o.idempotency_key = t.idempotency_key AND (o.created_at, o.id) < (t.created_at, t.id));
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        RAISE NOTICE 'idempotency keys: % later task(s) without a project shared a key with an older one; '
                     'their key was cleared (the tasks are kept)', n;
    END IF;
END $$;

-- ------------------------------------------------------------------ indexes (as source/store/sql.py)
-- Affinity: the claim walks this one for the held model's (and model-less) ready rows of one priority.
CREATE INDEX IF NOT EXISTS idx_tasks_ready_model ON tasks (model, priority DESC, created_at, id) WHERE status = 'Queued';
-- Fair shares: running tasks of one project, counted per candidate when the project has a limit.
CREATE INDEX IF NOT EXISTS idx_tasks_running_project ON tasks (project_id) WHERE status = 'In Progress';
-- Deadlines: the sweep finds expired unclaimed rows without reading the queue.
CREATE INDEX IF NOT EXISTS idx_tasks_start_by ON tasks (start_by) WHERE status = 'Queued' AND start_by IS NOT NULL;
-- Idempotent inserts from every path; a NULL project is one project ('').
CREATE UNIQUE INDEX IF NOT EXISTS idx_tasks_idempotency ON tasks (COALESCE(project_id, ''), idempotency_key) WHERE idempotency_key IS NOT NULL;

-- ------------------------------------------------------------------ the model of a directly inserted row
-- Exactly as source/store/sql.py writes it (checked by tests/test_supabase_sql.py): the params' model name,
-- else the task type's default, aliases through model_names. App inserts through PostgREST and insert_task
-- are direct inserts here. SECURITY DEFINER (set after): a signed-in user's insert runs it, and model_names
-- is not theirs to read.
CREATE OR REPLACE FUNCTION headless_task_model() RETURNS trigger AS $$
    DECLARE p jsonb;
    BEGIN
        IF NEW.model IS NULL AND NEW.task_type IN ('generate', 'wgp', 't2v', 'i2v', 'vace', 'flf2v', 'travel_segment', 'single_image', 'dp_final_gen') THEN
            BEGIN
                p := NEW.params::jsonb;  -- a migrated seed table may hold params as text
            EXCEPTION WHEN others THEN
                p := NULL;  -- not JSON: the worker fails the row with its reason; no model here
            END;
            IF jsonb_typeof(p) <> 'object' THEN p := NULL; END IF;
            NEW.model := COALESCE((SELECT m.model FROM model_names m WHERE m.name = lower(COALESCE(COALESCE(CASE WHEN jsonb_typeof(p -> 'model') = 'string' THEN NULLIF(trim(p ->> 'model'), '') END, CASE WHEN jsonb_typeof(p -> 'model_name') = 'string' THEN NULLIF(trim(p ->> 'model_name'), '') END), CASE NEW.task_type WHEN 'generate' THEN 't2v' WHEN 'wgp' THEN 't2v' WHEN 't2v' THEN 't2v' WHEN 'i2v' THEN 'i2v' WHEN 'vace' THEN 'vace_14B' WHEN 'flf2v' THEN 'flf2v_720p' WHEN 'single_image' THEN 't2v' WHEN 'dp_final_gen' THEN 'vace_14B' END))), COALESCE(COALESCE(CASE WHEN jsonb_typeof(p -> 'model') = 'string' THEN NULLIF(trim(p ->> 'model'), '') END, CASE WHEN jsonb_typeof(p -> 'model_name') = 'string' THEN NULLIF(trim(p ->> 'model_name'), '') END), CASE NEW.task_type WHEN 'generate' THEN 't2v' WHEN 'wgp' THEN 't2v' WHEN 't2v' THEN 't2v' WHEN 'i2v' THEN 'i2v' WHEN 'vace' THEN 'vace_14B' WHEN 'flf2v' THEN 'flf2v_720p' WHEN 'single_image' THEN 't2v' WHEN 'dp_final_gen' THEN 'vace_14B' END));
        END IF;
        RETURN NEW;
    END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS headless_tasks_model ON tasks;
CREATE TRIGGER headless_tasks_model BEFORE INSERT ON tasks
       FOR EACH ROW EXECUTE FUNCTION headless_task_model();
ALTER FUNCTION headless_task_model() SECURITY DEFINER SET search_path = public, pg_temp;

-- ------------------------------------------------------------------ the claim
-- schema 2-3's signatures go: a call naming the old arguments must fail, not claim without the fleet rules.
DROP FUNCTION IF EXISTS worker_claim(text, double precision, text[], text);
DROP FUNCTION IF EXISTS headless_claim_for_user(text, double precision, text[], uuid);
DROP FUNCTION IF EXISTS headless_claim(text, double precision, text[]);

-- Exactly as source/store/sql.py writes it (checked by tests/test_supabase_sql.py). Not callable through
-- the API itself; worker_claim() is the API's door to it.
CREATE OR REPLACE FUNCTION headless_claim(p_worker text, p_lease_seconds double precision, p_types text[], p_model text, p_max_wait double precision) RETURNS TABLE (id text, task_type text, params text, attempts integer, worker_id text, max_attempts integer, project_id text, priority integer, timeout_seconds double precision, parent_task_id text, completes_parent integer, model text) LANGUAGE plpgsql SET enable_sort = off SET enable_bitmapscan = off SET jit = off AS $$
#variable_conflict use_column
BEGIN
    IF EXISTS (SELECT 1 FROM project_limits) THEN PERFORM pg_advisory_xact_lock(7418806246); END IF;
    RETURN QUERY WITH head AS (SELECT t.id, t.priority, t.created_at, t.model FROM tasks t LEFT JOIN tasks p ON p.id = t.dependant_on WHERE 
    t.status = 'Queued'
    AND (t.not_before IS NULL OR t.not_before <= now())
    AND (t.start_by IS NULL OR t.start_by > now())
    AND (t.dependant_on IS NULL OR p.status = 'Complete')
    AND NOT EXISTS (
        SELECT 1 FROM task_dependencies d JOIN tasks q ON q.id = d.depends_on
        WHERE d.task_id = t.id AND q.status <> 'Complete')
    AND NOT EXISTS (
        SELECT 1 FROM paused_scopes s
        WHERE s.task_type IN ('', t.task_type) AND s.project_id IN ('', COALESCE(t.project_id, '')))
    AND NOT EXISTS (
        SELECT 1 FROM project_limits l WHERE l.project_id = t.project_id AND l.max_running <= (
            SELECT COUNT(*) FROM tasks r
            WHERE r.project_id = t.project_id AND r.status = 'In Progress' AND r.awaiting_children = 0))
    AND (p_types IS NULL OR t.task_type = ANY(p_types))
 ORDER BY t.priority DESC, t.created_at, t.id LIMIT 1 FOR UPDATE OF t SKIP LOCKED), candidate AS (SELECT COALESCE((SELECT id FROM head WHERE p_model IS NULL OR head.model IS NULL OR head.model = p_model OR head.created_at <= clock_timestamp() - make_interval(secs => p_max_wait)), (SELECT t.id FROM tasks t LEFT JOIN tasks p ON p.id = t.dependant_on WHERE 
    t.status = 'Queued'
    AND (t.not_before IS NULL OR t.not_before <= now())
    AND (t.start_by IS NULL OR t.start_by > now())
    AND (t.dependant_on IS NULL OR p.status = 'Complete')
    AND NOT EXISTS (
        SELECT 1 FROM task_dependencies d JOIN tasks q ON q.id = d.depends_on
        WHERE d.task_id = t.id AND q.status <> 'Complete')
    AND NOT EXISTS (
        SELECT 1 FROM paused_scopes s
        WHERE s.task_type IN ('', t.task_type) AND s.project_id IN ('', COALESCE(t.project_id, '')))
    AND NOT EXISTS (
        SELECT 1 FROM project_limits l WHERE l.project_id = t.project_id AND l.max_running <= (
            SELECT COUNT(*) FROM tasks r
            WHERE r.project_id = t.project_id AND r.status = 'In Progress' AND r.awaiting_children = 0))
    AND (p_types IS NULL OR t.task_type = ANY(p_types))
 AND t.model >= p_model AND t.model <= p_model AND t.priority = (SELECT priority FROM head) ORDER BY t.model, t.priority DESC, t.created_at, t.id LIMIT 1 FOR UPDATE OF t SKIP LOCKED), (SELECT t.id FROM tasks t LEFT JOIN tasks p ON p.id = t.dependant_on WHERE 
    t.status = 'Queued'
    AND (t.not_before IS NULL OR t.not_before <= now())
    AND (t.start_by IS NULL OR t.start_by > now())
    AND (t.dependant_on IS NULL OR p.status = 'Complete')
    AND NOT EXISTS (
        SELECT 1 FROM task_dependencies d JOIN tasks q ON q.id = d.depends_on
        WHERE d.task_id = t.id AND q.status <> 'Complete')
    AND NOT EXISTS (
        SELECT 1 FROM paused_scopes s
        WHERE s.task_type IN ('', t.task_type) AND s.project_id IN ('', COALESCE(t.project_id, '')))
    AND NOT EXISTS (
        SELECT 1 FROM project_limits l WHERE l.project_id = t.project_id AND l.max_running <= (
            SELECT COUNT(*) FROM tasks r
            WHERE r.project_id = t.project_id AND r.status = 'In Progress' AND r.awaiting_children = 0))
    AND (p_types IS NULL OR t.task_type = ANY(p_types))
 AND t.model IS NULL AND t.priority = (SELECT priority FROM head) ORDER BY t.model, t.priority DESC, t.created_at, t.id LIMIT 1 FOR UPDATE OF t SKIP LOCKED), (SELECT id FROM head)) AS id) UPDATE tasks SET 
    status = 'In Progress', worker_id = p_worker, attempts = attempts + 1,
    lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds), heartbeat_at = clock_timestamp(), generation_started_at = clock_timestamp(),
    updated_at = clock_timestamp(), progress = 0, progress_message = NULL, error_message = NULL
 FROM candidate WHERE tasks.id = candidate.id RETURNING tasks.id::text, tasks.task_type::text, tasks.params::text, tasks.attempts::integer, tasks.worker_id::text, tasks.max_attempts::integer, tasks.project_id::text, tasks.priority::integer, tasks.timeout_seconds::double precision, tasks.parent_task_id::text, tasks.completes_parent::integer, tasks.model::text;
END
$$;

-- The claim for a personal worker token: headless_claim's statement with one more condition (the project
-- belongs to p_user) after each ready test. tests/test_supabase_sql.py checks the two stay the same apart from it.
CREATE OR REPLACE FUNCTION headless_claim_for_user(p_worker text, p_lease_seconds double precision, p_types text[], p_model text, p_max_wait double precision, p_user uuid) RETURNS TABLE (id text, task_type text, params text, attempts integer, worker_id text, max_attempts integer, project_id text, priority integer, timeout_seconds double precision, parent_task_id text, completes_parent integer, model text) LANGUAGE plpgsql SET enable_sort = off SET enable_bitmapscan = off SET jit = off SET search_path = public, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF EXISTS (SELECT 1 FROM project_limits) THEN PERFORM pg_advisory_xact_lock(7418806246); END IF;
    RETURN QUERY WITH head AS (SELECT t.id, t.priority, t.created_at, t.model FROM tasks t LEFT JOIN tasks p ON p.id = t.dependant_on WHERE 
    t.status = 'Queued'
    AND (t.not_before IS NULL OR t.not_before <= now())
    AND (t.start_by IS NULL OR t.start_by > now())
    AND (t.dependant_on IS NULL OR p.status = 'Complete')
    AND NOT EXISTS (
        SELECT 1 FROM task_dependencies d JOIN tasks q ON q.id = d.depends_on
        WHERE d.task_id = t.id AND q.status <> 'Complete')
    AND NOT EXISTS (
        SELECT 1 FROM paused_scopes s
        WHERE s.task_type IN ('', t.task_type) AND s.project_id IN ('', COALESCE(t.project_id, '')))
    AND NOT EXISTS (
        SELECT 1 FROM project_limits l WHERE l.project_id = t.project_id AND l.max_running <= (
            SELECT COUNT(*) FROM tasks r
            WHERE r.project_id = t.project_id AND r.status = 'In Progress' AND r.awaiting_children = 0))
    AND (p_types IS NULL OR t.task_type = ANY(p_types))
    AND t.project_id IN (SELECT pr.id FROM projects pr WHERE pr.user_id = p_user)
 ORDER BY t.priority DESC, t.created_at, t.id LIMIT 1 FOR UPDATE OF t SKIP LOCKED), candidate AS (SELECT COALESCE((SELECT id FROM head WHERE p_model IS NULL OR head.model IS NULL OR head.model = p_model OR head.created_at <= clock_timestamp() - make_interval(secs => p_max_wait)), (SELECT t.id FROM tasks t LEFT JOIN tasks p ON p.id = t.dependant_on WHERE 
    t.status = 'Queued'
    AND (t.not_before IS NULL OR t.not_before <= now())
    AND (t.start_by IS NULL OR t.start_by > now())
    AND (t.dependant_on IS NULL OR p.status = 'Complete')
    AND NOT EXISTS (
        SELECT 1 FROM task_dependencies d JOIN tasks q ON q.id = d.depends_on
        WHERE d.task_id = t.id AND q.status <> 'Complete')
    AND NOT EXISTS (
        SELECT 1 FROM paused_scopes s
        WHERE s.task_type IN ('', t.task_type) AND s.project_id IN ('', COALESCE(t.project_id, '')))
    AND NOT EXISTS (
        SELECT 1 FROM project_limits l WHERE l.project_id = t.project_id AND l.max_running <= (
            SELECT COUNT(*) FROM tasks r
            WHERE r.project_id = t.project_id AND r.status = 'In Progress' AND r.awaiting_children = 0))
    AND (p_types IS NULL OR t.task_type = ANY(p_types))
    AND t.project_id IN (SELECT pr.id FROM projects pr WHERE pr.user_id = p_user)
 AND t.model >= p_model AND t.model <= p_model AND t.priority = (SELECT priority FROM head) ORDER BY t.model, t.priority DESC, t.created_at, t.id LIMIT 1 FOR UPDATE OF t SKIP LOCKED), (SELECT t.id FROM tasks t LEFT JOIN tasks p ON p.id = t.dependant_on WHERE 
    t.status = 'Queued'
    AND (t.not_before IS NULL OR t.not_before <= now())
    AND (t.start_by IS NULL OR t.start_by > now())
    AND (t.dependant_on IS NULL OR p.status = 'Complete')
    AND NOT EXISTS (
        SELECT 1 FROM task_dependencies d JOIN tasks q ON q.id = d.depends_on
        WHERE d.task_id = t.id AND q.status <> 'Complete')
    AND NOT EXISTS (
        SELECT 1 FROM paused_scopes s
        WHERE s.task_type IN ('', t.task_type) AND s.project_id IN ('', COALESCE(t.project_id, '')))
    AND NOT EXISTS (
        SELECT 1 FROM project_limits l WHERE l.project_id = t.project_id AND l.max_running <= (
            SELECT COUNT(*) FROM tasks r
            WHERE r.project_id = t.project_id AND r.status = 'In Progress' AND r.awaiting_children = 0))
    AND (p_types IS NULL OR t.task_type = ANY(p_types))
    AND t.project_id IN (SELECT pr.id FROM projects pr WHERE pr.user_id = p_user)
 AND t.model IS NULL AND t.priority = (SELECT priority FROM head) ORDER BY t.model, t.priority DESC, t.created_at, t.id LIMIT 1 FOR UPDATE OF t SKIP LOCKED), (SELECT id FROM head)) AS id) UPDATE tasks SET 
    status = 'In Progress', worker_id = p_worker, attempts = attempts + 1,
    lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds), heartbeat_at = clock_timestamp(), generation_started_at = clock_timestamp(),
    updated_at = clock_timestamp(), progress = 0, progress_message = NULL, error_message = NULL
 FROM candidate WHERE tasks.id = candidate.id RETURNING tasks.id::text, tasks.task_type::text, tasks.params::text, tasks.attempts::integer, tasks.worker_id::text, tasks.max_attempts::integer, tasks.project_id::text, tasks.priority::integer, tasks.timeout_seconds::double precision, tasks.parent_task_id::text, tasks.completes_parent::integer, tasks.model::text;
END
$$;

-- p_model: the model the worker's engine holds (NULL: none); p_max_wait: the affinity cut-off in seconds
-- (headless.py --affinity-max-wait; 0 is strict priority and age order). Both after p_token, so a call
-- naming only the first four arguments still works.
CREATE OR REPLACE FUNCTION worker_claim(p_worker text, p_lease_seconds double precision, p_types text[] DEFAULT NULL,
                                        p_token text DEFAULT NULL, p_model text DEFAULT NULL,
                                        p_max_wait double precision DEFAULT 300)
RETURNS TABLE (id text, task_type text, params text, attempts integer, worker_id text, max_attempts integer,
               project_id text, priority integer, timeout_seconds double precision, parent_task_id text,
               completes_parent integer, model text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_user uuid := headless_worker_scope(p_token);
    v_wait double precision := greatest(coalesce(p_max_wait, 300), 0);
BEGIN
    IF v_user IS NULL THEN
        RETURN QUERY SELECT * FROM headless_claim(p_worker, p_lease_seconds, p_types, p_model, v_wait);
    ELSE
        RETURN QUERY SELECT * FROM headless_claim_for_user(p_worker, p_lease_seconds, p_types, p_model, v_wait, v_user);
    END IF;
END
$$;

-- ------------------------------------------------------------------ worker functions
-- As the store's worker_upsert: a (re)started worker holds no model until it says so.
CREATE OR REPLACE FUNCTION worker_register(p_worker text, p_host text, p_pid integer, p_version text,
                                           p_token text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM headless_worker_scope(p_token);
    INSERT INTO workers (id, host, pid, started_at, last_seen_at, current_task_id, version, status)
        VALUES (p_worker, p_host, p_pid, now(), now(), NULL, p_version, 'running')
        ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, started_at = excluded.started_at,
            last_seen_at = excluded.last_seen_at, current_task_id = NULL, version = excluded.version,
            status = 'running', model = NULL;
END
$$;

-- The model the worker holds (what it claims first), for operators reading the workers table.
CREATE OR REPLACE FUNCTION worker_set_model(p_worker text, p_model text, p_token text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM headless_worker_scope(p_token);
    UPDATE workers SET model = p_model WHERE id = p_worker;
END
$$;

-- The model catalog's names and aliases ({"name": "model", ...}) for the trigger. Shared by every project:
-- only the service role writes them (a personal worker's catalog could otherwise reroute others' tasks).
-- Returns how many were written.
CREATE OR REPLACE FUNCTION worker_record_model_names(p_names jsonb, p_token text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    IF headless_worker_scope(p_token) IS NOT NULL OR jsonb_typeof(p_names) IS DISTINCT FROM 'object' THEN
        RETURN 0;
    END IF;
    INSERT INTO model_names (name, model)
        SELECT key, value #>> '{}' FROM jsonb_each(p_names)
        WHERE jsonb_typeof(value) = 'string' AND key <> '' AND value #>> '{}' <> ''
        ON CONFLICT (name) DO UPDATE SET model = excluded.model;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Deadlines (as source/store/dag.py sweep_stranded): Queued rows past start_by end Failed, and what waits on
-- them follows. A token's worker ends only its owner's. Returns [{task_id, reason}] for the worker's log.
CREATE OR REPLACE FUNCTION worker_expire_unstarted(p_token text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_user uuid := headless_worker_scope(p_token);
    r record;
    v_msg text;
    v_parent text;
    v_done jsonb := '[]'::jsonb;
BEGIN
    FOR r IN SELECT id, task_type, start_by FROM tasks
             WHERE status = 'Queued' AND start_by IS NOT NULL AND start_by <= now() AND headless_in_scope(id, v_user)
             ORDER BY start_by LIMIT 100 FOR UPDATE SKIP LOCKED LOOP
        v_msg := format('expired before it started: not claimed by its start_by time %s', r.start_by);
        UPDATE tasks SET status = 'Failed', error_message = v_msg, updated_at = now(), generation_processed_at = now()
            WHERE id = r.id AND status = 'Queued' RETURNING parent_task_id INTO v_parent;
        IF FOUND THEN
            PERFORM headless_propagate_end(r.id, r.task_type, 'Failed', v_msg, v_parent);
            v_done := v_done || jsonb_build_object('task_id', r.id, 'reason', v_msg);
        END IF;
    END LOOP;
    RETURN v_done;
END
$$;

-- The same key twice in one project (a NULL project is one project) gives the first task.
CREATE OR REPLACE FUNCTION insert_task(p_project_id text, p_task_type text, p_params jsonb,
                                       p_idempotency_key text DEFAULT NULL, p_dependant_on text DEFAULT NULL,
                                       p_priority integer DEFAULT 0, p_id text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    v_id text;
BEGIN
    INSERT INTO tasks (id, task_type, params, status, dependant_on, project_id, priority, idempotency_key)
        VALUES (coalesce(p_id, gen_random_uuid()::text), p_task_type, p_params, 'Queued', p_dependant_on,
                p_project_id, coalesce(p_priority, 0), p_idempotency_key)
        ON CONFLICT (COALESCE(project_id, ''), idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING id INTO v_id;
    IF v_id IS NULL THEN
        SELECT id INTO v_id FROM tasks
            WHERE COALESCE(project_id, '') = COALESCE(p_project_id, '') AND idempotency_key = p_idempotency_key;
    END IF;
    RETURN v_id;
END
$$;

-- A worker refuses to start against a project missing this migration (it passes p_model to worker_claim).
CREATE OR REPLACE FUNCTION worker_api_version() RETURNS integer
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$ SELECT 2 $$;

-- ------------------------------------------------------------------ row-level security and grants
ALTER TABLE paused_scopes ENABLE ROW LEVEL SECURITY;
ALTER TABLE project_limits ENABLE ROW LEVEL SECURITY;
ALTER TABLE model_names ENABLE ROW LEVEL SECURITY;
-- Supabase's default privileges granted everything to the API roles: take it back.
REVOKE ALL ON paused_scopes, project_limits, model_names FROM anon, authenticated;
GRANT ALL ON paused_scopes, project_limits, model_names TO service_role;
-- A signed-in user may see whether their own projects are paused or limited (not other projects', not the
-- global '' scope); pausing, resuming and limits are the operator's (service role, add_task.py).
GRANT SELECT ON paused_scopes, project_limits TO authenticated;
DROP POLICY IF EXISTS paused_scopes_owner_read ON paused_scopes;
CREATE POLICY paused_scopes_owner_read ON paused_scopes FOR SELECT TO authenticated
    USING (headless_user_owns_project(project_id));
DROP POLICY IF EXISTS project_limits_owner_read ON project_limits;
CREATE POLICY project_limits_owner_read ON project_limits FOR SELECT TO authenticated
    USING (headless_user_owns_project(project_id));
-- model_names: no policy, so only the service role (BYPASSRLS) sees it; the trigger reads it as its owner.

-- An app may give a task a deadline; `model` is the trigger's (one rule: the catalog's).
GRANT INSERT (start_by) ON tasks TO authenticated;

REVOKE ALL ON FUNCTION headless_claim(text, double precision, text[], text, double precision),
    headless_claim_for_user(text, double precision, text[], text, double precision, uuid),
    headless_task_model(),
    worker_claim(text, double precision, text[], text, text, double precision),
    worker_set_model(text, text, text), worker_record_model_names(jsonb, text), worker_expire_unstarted(text)
    FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION
    worker_claim(text, double precision, text[], text, text, double precision),
    worker_set_model(text, text, text), worker_record_model_names(jsonb, text), worker_expire_unstarted(text)
    TO service_role, anon;

-- A direct-URL worker (source/store/schema.py) finds schema version 5 and leaves all of this alone.
INSERT INTO headless_schema (name, version) VALUES ('tasks', 5)
    ON CONFLICT (name) DO UPDATE SET version = greatest(headless_schema.version, excluded.version);
