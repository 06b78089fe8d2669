-- Who may do what: row-level security on every table, column protection, worker tokens, and the
-- SECURITY DEFINER functions through which workers change task state.
--
-- * A signed-in user (`authenticated`, auth.uid()) inserts tasks into, reads and cancels tasks of the
--   projects they own, and nothing else. They may name only the columns an app sets on insert (column
--   privileges), so status, worker, lease, timing, attempts and output columns are the workers' alone.
-- * `anon` sees no rows.
-- * Workers change state only through the worker_* functions below (every one guarded on the task's
--   status, worker and attempt, as source/store/sql.py's statements are). They are executable by
--   service_role (the service key: every project) and by anon with a personal worker token (p_token:
--   only the token owner's projects; a revoked token is refused at its next call).

-- ------------------------------------------------------------------ personal worker tokens
CREATE TABLE IF NOT EXISTS worker_tokens (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    name TEXT NULL,
    token_hash TEXT NOT NULL UNIQUE,  -- hex SHA-256 of the token; the token itself is never stored
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at TIMESTAMPTZ NULL,
    revoked_at TIMESTAMPTZ NULL
);

-- ------------------------------------------------------------------ helpers
CREATE OR REPLACE FUNCTION headless_token_hash(p_token text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT encode(sha256(convert_to(p_token, 'UTF8')), 'hex')
$$;

-- The projects a worker call may touch: NULL = all (the service role, or a direct database session with
-- no JWT); else the user owning the token. A missing, wrong or revoked token is refused (SQLSTATE 28000).
CREATE OR REPLACE FUNCTION headless_worker_scope(p_token text) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_user uuid;
BEGIN
    IF p_token IS NULL THEN
        IF auth.role() = 'service_role'
           OR (auth.role() IS NULL AND pg_has_role(session_user, 'service_role', 'MEMBER')) THEN
            RETURN NULL;
        END IF;
        RAISE EXCEPTION 'a worker call needs the service role key or a personal worker token'
            USING ERRCODE = '28000';
    END IF;
    SELECT user_id INTO v_user FROM worker_tokens
        WHERE token_hash = headless_token_hash(p_token) AND revoked_at IS NULL;
    IF v_user IS NULL THEN
        RAISE EXCEPTION 'worker token is invalid or revoked' USING ERRCODE = '28000';
    END IF;
    -- last_used_at at most once a minute: every worker call passes here, and a write per call would
    -- make the token row a point of contention between that user's workers.
    UPDATE worker_tokens SET last_used_at = now()
        WHERE token_hash = headless_token_hash(p_token) AND revoked_at IS NULL
          AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute');
    RETURN v_user;
END
$$;

CREATE OR REPLACE FUNCTION headless_user_owns_project(p_project text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM projects WHERE id = p_project AND user_id = auth.uid())
$$;

CREATE OR REPLACE FUNCTION headless_user_owns_task(p_task text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM tasks t JOIN projects p ON p.id = t.project_id
                   WHERE t.id = p_task AND p.user_id = auth.uid())
$$;

-- Is the task in the caller's scope (NULL scope: every task)?
CREATE OR REPLACE FUNCTION headless_in_scope(p_task text, p_user uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT p_user IS NULL OR EXISTS (SELECT 1 FROM tasks t JOIN projects p ON p.id = t.project_id
                                     WHERE t.id = p_task AND p.user_id = p_user)
$$;

-- ------------------------------------------------------------------ row-level security
ALTER TABLE projects ENABLE ROW LEVEL SECURITY;
ALTER TABLE tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE task_dependencies ENABLE ROW LEVEL SECURITY;
ALTER TABLE workers ENABLE ROW LEVEL SECURITY;
ALTER TABLE output_cache ENABLE ROW LEVEL SECURITY;
ALTER TABLE headless_schema ENABLE ROW LEVEL SECURITY;
ALTER TABLE worker_tokens ENABLE ROW LEVEL SECURITY;

-- Supabase's default privileges granted everything to the API roles: take it back, then grant columns.
REVOKE ALL ON projects, tasks, task_dependencies, workers, output_cache, headless_schema, worker_tokens
    FROM anon, authenticated;
GRANT ALL ON projects, tasks, task_dependencies, workers, output_cache, headless_schema, worker_tokens
    TO service_role;
GRANT SELECT ON projects, tasks, task_dependencies TO anon, authenticated;  -- anon: no policy, no rows
GRANT INSERT (id, user_id, name), UPDATE (name), DELETE ON projects TO authenticated;
-- What an app sets on insert. status may be named (the seed's app writes 'Queued') but the policy
-- admits only 'Queued'. No UPDATE: cancel goes through cancel_task().
GRANT INSERT (id, task_type, params, status, dependant_on, project_id, priority, max_attempts, timeout_seconds,
              idempotency_key) ON tasks TO authenticated;
GRANT INSERT ON task_dependencies TO authenticated;
GRANT SELECT (id, user_id, name, created_at, last_used_at, revoked_at) ON worker_tokens TO authenticated;

DROP POLICY IF EXISTS projects_owner ON projects;
CREATE POLICY projects_owner ON projects FOR ALL TO authenticated
    USING (user_id = (SELECT auth.uid())) WITH CHECK (user_id = (SELECT auth.uid()));

DROP POLICY IF EXISTS tasks_owner_read ON tasks;
CREATE POLICY tasks_owner_read ON tasks FOR SELECT TO authenticated
    USING (headless_user_owns_project(project_id));
DROP POLICY IF EXISTS tasks_owner_insert ON tasks;
CREATE POLICY tasks_owner_insert ON tasks FOR INSERT TO authenticated
    WITH CHECK (headless_user_owns_project(project_id) AND status = 'Queued'
                AND (dependant_on IS NULL OR headless_user_owns_task(dependant_on)));

DROP POLICY IF EXISTS task_dependencies_owner ON task_dependencies;
CREATE POLICY task_dependencies_owner ON task_dependencies FOR ALL TO authenticated
    USING (headless_user_owns_task(task_id))
    WITH CHECK (headless_user_owns_task(task_id) AND headless_user_owns_task(depends_on));

DROP POLICY IF EXISTS worker_tokens_owner ON worker_tokens;
CREATE POLICY worker_tokens_owner ON worker_tokens FOR SELECT TO authenticated
    USING (user_id = (SELECT auth.uid()));
-- workers, output_cache, headless_schema: no policy, so only the service role (BYPASSRLS) sees them.

-- ------------------------------------------------------------------ app-facing functions
-- Insert a task, or with an idempotency key already used in the project, return the existing task's id.
-- SECURITY INVOKER: the caller's grants and policies decide, exactly as for a plain insert.
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
        ON CONFLICT (project_id, idempotency_key) DO NOTHING
        RETURNING id INTO v_id;
    IF v_id IS NULL THEN
        SELECT id INTO v_id FROM tasks WHERE project_id = p_project_id AND idempotency_key = p_idempotency_key;
    END IF;
    RETURN v_id;
END
$$;

-- A personal worker token for the signed-in user: returned once, stored as its hash.
CREATE OR REPLACE FUNCTION create_worker_token(p_name text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_token text := 'hwt_' || replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', '');
    v_id uuid;
BEGIN
    IF auth.uid() IS NULL THEN
        RAISE EXCEPTION 'sign in to create a worker token' USING ERRCODE = '28000';
    END IF;
    INSERT INTO worker_tokens (user_id, name, token_hash) VALUES (auth.uid(), p_name, headless_token_hash(v_token))
        RETURNING id INTO v_id;
    RETURN jsonb_build_object('id', v_id, 'token', v_token);
END
$$;

CREATE OR REPLACE FUNCTION revoke_worker_token(p_id uuid) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH r AS (UPDATE worker_tokens SET revoked_at = now()
               WHERE id = p_id AND user_id = auth.uid() AND revoked_at IS NULL RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM r)
$$;

-- ------------------------------------------------------------------ state changes (one home: here)
-- A task ended Failed or Cancelled: nothing waiting on it may stay Queued forever (as
-- source/store/dag.py propagate_end): dependents end with the same status, a waiting orchestrator ends
-- naming its child, an orchestrator's own Queued children are cancelled and running ones asked to stop.
CREATE OR REPLACE FUNCTION headless_propagate_end(p_id text, p_type text, p_status text, p_message text,
                                                  p_parent text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_word text := CASE p_status WHEN 'Failed' THEN 'failed' ELSE 'was cancelled' END;
    v_child text;
    v_child_status text;
    v_msg text;
    v_up text;
    v_type text;
BEGIN
    IF p_status NOT IN ('Failed', 'Cancelled') THEN
        RETURN;
    END IF;
    FOR v_child IN SELECT id FROM tasks WHERE dependant_on = p_id
                   UNION SELECT task_id FROM task_dependencies WHERE depends_on = p_id LOOP
        v_msg := left(format('not run: task %s (%s) that it depends on %s: %s', p_id, p_type, v_word, p_message), 2000);
        UPDATE tasks SET status = p_status, error_message = v_msg, updated_at = now(), generation_processed_at = now()
            WHERE id = v_child AND status = 'Queued' RETURNING parent_task_id, task_type INTO v_up, v_type;
        IF FOUND THEN
            PERFORM headless_propagate_end(v_child, v_type, p_status, v_msg, v_up);
        END IF;
    END LOOP;
    IF p_parent IS NOT NULL THEN
        v_msg := left(format('child task %s (%s) %s: %s', p_id, p_type, v_word, p_message), 2000);
        UPDATE tasks SET status = p_status, error_message = v_msg, awaiting_children = 0,
                         generation_processed_at = now(), updated_at = now()
            WHERE id = p_parent AND status = 'In Progress' AND awaiting_children = 1
            RETURNING parent_task_id, task_type INTO v_up, v_type;
        IF FOUND THEN
            PERFORM headless_propagate_end(p_parent, v_type, p_status, v_msg, v_up);
        END IF;
    END IF;
    FOR v_child, v_child_status IN SELECT id, status FROM tasks WHERE parent_task_id = p_id LOOP
        IF v_child_status = 'Queued' THEN
            v_msg := left(format('not run: its orchestrator %s (%s) %s: %s', p_id, p_type, v_word, p_message), 2000);
            UPDATE tasks SET status = 'Cancelled', error_message = v_msg, updated_at = now(),
                             generation_processed_at = now()
                WHERE id = v_child AND status = 'Queued' RETURNING task_type INTO v_type;
            IF FOUND THEN
                PERFORM headless_propagate_end(v_child, v_type, 'Cancelled', v_msg, NULL);
            END IF;
        ELSIF v_child_status = 'In Progress' THEN
            UPDATE tasks SET cancel_requested = 1, updated_at = now() WHERE id = v_child AND status = 'In Progress';
        END IF;
    END LOOP;
END
$$;

-- The claim for a personal worker token: headless_claim's statement with one more condition (the
-- project belongs to p_user). tests/test_supabase_sql.py checks the two stay the same apart from it.
CREATE OR REPLACE FUNCTION headless_claim_for_user(p_worker text, p_lease_seconds double precision, p_types text[], p_user uuid) RETURNS TABLE (id text, task_type text, params text, attempts integer, worker_id text, max_attempts integer, project_id text, priority integer, timeout_seconds double precision, parent_task_id text, completes_parent integer) LANGUAGE plpgsql SET enable_sort = off SET enable_bitmapscan = off SET search_path = public, pg_temp AS $$
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
    AND t.project_id IN (SELECT pr.id FROM projects pr WHERE pr.user_id = p_user)
 ORDER BY t.priority DESC, t.created_at, t.id LIMIT 1 FOR UPDATE OF t SKIP LOCKED) UPDATE tasks SET 
    status = 'In Progress', worker_id = p_worker, attempts = attempts + 1,
    lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds), heartbeat_at = clock_timestamp(), generation_started_at = clock_timestamp(),
    updated_at = clock_timestamp(), progress = 0, progress_message = NULL, error_message = NULL
 FROM candidate WHERE tasks.id = candidate.id RETURNING tasks.id::text, tasks.task_type::text, tasks.params::text, tasks.attempts::integer, tasks.worker_id::text, tasks.max_attempts::integer, tasks.project_id::text, tasks.priority::integer, tasks.timeout_seconds::double precision, tasks.parent_task_id::text, tasks.completes_parent::integer;
END
$$;

CREATE OR REPLACE FUNCTION worker_claim(p_worker text, p_lease_seconds double precision, p_types text[] DEFAULT NULL,
                                        p_token text DEFAULT NULL)
RETURNS TABLE (id text, task_type text, params text, attempts integer, worker_id text, max_attempts integer,
               project_id text, priority integer, timeout_seconds double precision, parent_task_id text,
               completes_parent integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_user uuid := headless_worker_scope(p_token);
BEGIN
    IF v_user IS NULL THEN
        RETURN QUERY SELECT * FROM headless_claim(p_worker, p_lease_seconds, p_types);
    ELSE
        RETURN QUERY SELECT * FROM headless_claim_for_user(p_worker, p_lease_seconds, p_types, v_user);
    END IF;
END
$$;

-- Renew the lease and write progress (also the progress call): {"owned": ..., "cancel_requested": ...}.
CREATE OR REPLACE FUNCTION worker_heartbeat(p_id text, p_worker text, p_attempt integer,
                                            p_lease_seconds double precision, p_progress real DEFAULT NULL,
                                            p_message text DEFAULT NULL, p_token text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_user uuid := headless_worker_scope(p_token);
    v_cancel integer;
BEGIN
    UPDATE tasks SET lease_expires_at = now() + make_interval(secs => p_lease_seconds), heartbeat_at = now(),
                     updated_at = now(), progress = p_progress, progress_message = p_message
        WHERE id = p_id AND status = 'In Progress' AND worker_id = p_worker AND attempts = p_attempt
          AND headless_in_scope(p_id, v_user)
        RETURNING cancel_requested INTO v_cancel;
    RETURN jsonb_build_object('owned', FOUND, 'cancel_requested', coalesce(v_cancel, 0) <> 0);
END
$$;

-- Complete (guarded); a child that completes its orchestrator completes it too, and so on up.
CREATE OR REPLACE FUNCTION worker_complete(p_id text, p_worker text, p_attempt integer,
                                           p_output_location text DEFAULT NULL, p_result jsonb DEFAULT NULL,
                                           p_token text DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_user uuid := headless_worker_scope(p_token);
    v_parent text;
    v_completes integer;
    v_status text;
    v_result jsonb := CASE WHEN jsonb_typeof(p_result) = 'object' THEN p_result ELSE '{}'::jsonb END
                      || jsonb_build_object('completed_by', p_id);
BEGIN
    UPDATE tasks SET status = 'Complete', output_location = p_output_location, result = p_result, progress = 1,
                     lease_expires_at = NULL, generation_processed_at = now(), updated_at = now()
        WHERE id = p_id AND status = 'In Progress' AND worker_id = p_worker AND attempts = p_attempt
          AND headless_in_scope(p_id, v_user)
        RETURNING parent_task_id, completes_parent INTO v_parent, v_completes;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    WHILE v_parent IS NOT NULL AND v_completes <> 0 LOOP
        UPDATE tasks SET status = 'Complete', output_location = p_output_location, result = v_result, progress = 1,
                         awaiting_children = 0, progress_message = NULL, generation_processed_at = now(),
                         updated_at = now()
            WHERE id = v_parent AND status = 'In Progress' AND awaiting_children = 1;
        SELECT parent_task_id, completes_parent, status INTO v_parent, v_completes, v_status
            FROM tasks WHERE id = v_parent;
        EXIT WHEN NOT FOUND OR v_status <> 'Complete';
    END LOOP;
    RETURN true;
END
$$;

-- Fail or cancel a claimed task (guarded), then propagate.
CREATE OR REPLACE FUNCTION worker_end(p_id text, p_worker text, p_attempt integer, p_status text, p_message text,
                                      p_token text DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_user uuid := headless_worker_scope(p_token);
    v_parent text;
    v_type text;
BEGIN
    IF p_status NOT IN ('Failed', 'Cancelled') THEN
        RAISE EXCEPTION 'worker_end ends a task Failed or Cancelled, not %', p_status USING ERRCODE = '22023';
    END IF;
    UPDATE tasks SET status = p_status, error_message = p_message, lease_expires_at = NULL,
                     generation_processed_at = now(), updated_at = now()
        WHERE id = p_id AND status = 'In Progress' AND worker_id = p_worker AND attempts = p_attempt
          AND headless_in_scope(p_id, v_user)
        RETURNING parent_task_id, task_type INTO v_parent, v_type;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM headless_propagate_end(p_id, v_type, p_status, p_message, v_parent);
    RETURN true;
END
$$;

-- Back to Queued after a delay (a retry; the attempt counts).
CREATE OR REPLACE FUNCTION worker_retry_later(p_id text, p_worker text, p_attempt integer, p_message text,
                                              p_delay_seconds double precision, p_token text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_user uuid := headless_worker_scope(p_token);
BEGIN
    UPDATE tasks SET status = 'Queued', error_message = p_message, worker_id = NULL, lease_expires_at = NULL,
                     not_before = now() + make_interval(secs => p_delay_seconds), updated_at = now()
        WHERE id = p_id AND status = 'In Progress' AND worker_id = p_worker AND attempts = p_attempt
          AND headless_in_scope(p_id, v_user);
    RETURN FOUND;
END
$$;

-- Graceful shutdown: back to Queued without spending the attempt.
CREATE OR REPLACE FUNCTION worker_hand_back(p_id text, p_worker text, p_attempt integer, p_token text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_user uuid := headless_worker_scope(p_token);
BEGIN
    UPDATE tasks SET status = 'Queued', attempts = attempts - 1, worker_id = NULL, lease_expires_at = NULL,
                     progress = NULL, progress_message = NULL, updated_at = now()
        WHERE id = p_id AND status = 'In Progress' AND worker_id = p_worker AND attempts = p_attempt
          AND headless_in_scope(p_id, v_user);
    RETURN FOUND;
END
$$;

-- Tasks whose worker stopped renewing its lease: re-queue them (the attempt counts), or fail them past
-- max_attempts. A token's worker reclaims only its owner's tasks. Returns what was done, for the log.
CREATE OR REPLACE FUNCTION worker_reclaim_expired(p_token text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_user uuid := headless_worker_scope(p_token);
    r record;
    v_msg text;
    v_parent text;
    v_done jsonb := '[]'::jsonb;
BEGIN
    FOR r IN SELECT id, task_type, worker_id, attempts, max_attempts FROM tasks
             WHERE status = 'In Progress' AND lease_expires_at < now() AND headless_in_scope(id, v_user)
             LIMIT 100 FOR UPDATE SKIP LOCKED LOOP
        v_msg := format('lease expired during attempt %s of %s: worker %s stopped renewing it (crashed, killed or '
                        'cut off)', r.attempts, r.max_attempts, r.worker_id);
        IF r.attempts >= r.max_attempts THEN
            v_msg := v_msg || '; no attempts left';
            UPDATE tasks SET status = 'Failed', lease_expires_at = NULL, updated_at = now(),
                             generation_processed_at = now(), error_message = v_msg
                WHERE id = r.id AND status = 'In Progress' AND attempts = r.attempts AND lease_expires_at < now()
                RETURNING parent_task_id INTO v_parent;
            IF FOUND THEN
                PERFORM headless_propagate_end(r.id, r.task_type, 'Failed', v_msg, v_parent);
                v_done := v_done || jsonb_build_object('task_id', r.id, 'worker_id', r.worker_id,
                                                       'attempt', r.attempts, 'outcome', 'Failed');
            END IF;
        ELSE
            UPDATE tasks SET status = 'Queued', worker_id = NULL, lease_expires_at = NULL, updated_at = now(),
                             error_message = v_msg
                WHERE id = r.id AND status = 'In Progress' AND attempts = r.attempts AND lease_expires_at < now();
            IF FOUND THEN
                v_done := v_done || jsonb_build_object('task_id', r.id, 'worker_id', r.worker_id,
                                                       'attempt', r.attempts, 'outcome', 'Queued');
            END IF;
        END IF;
    END LOOP;
    RETURN v_done;
END
$$;

-- Cancel: a Queued task (or a waiting orchestrator) ends Cancelled now; a running one is asked to stop.
-- A signed-in user may cancel tasks of their own projects; the service role any. Returns the status after.
CREATE OR REPLACE FUNCTION cancel_task(p_id text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_status text;
    v_type text;
    v_parent text;
    v_awaiting integer;
    v_msg text := 'cancelled on request';
BEGIN
    IF NOT (auth.role() = 'service_role' OR headless_user_owns_task(p_id)
            OR (auth.role() IS NULL AND pg_has_role(session_user, 'service_role', 'MEMBER'))) THEN
        RAISE EXCEPTION 'no task with id % in your projects', p_id USING ERRCODE = '42501';
    END IF;
    SELECT status, task_type, parent_task_id, awaiting_children INTO v_status, v_type, v_parent, v_awaiting
        FROM tasks WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no task with id %', p_id USING ERRCODE = 'P0002';
    END IF;
    IF v_status = 'Queued' THEN
        UPDATE tasks SET status = 'Cancelled', cancel_requested = 1, error_message = v_msg, updated_at = now(),
                         generation_processed_at = now() WHERE id = p_id AND status = 'Queued';
    ELSIF v_status = 'In Progress' AND v_awaiting <> 0 THEN
        UPDATE tasks SET status = 'Cancelled', cancel_requested = 1, awaiting_children = 0, error_message = v_msg,
                         updated_at = now(), generation_processed_at = now()
            WHERE id = p_id AND status = 'In Progress' AND awaiting_children = 1;
    ELSIF v_status = 'In Progress' THEN
        UPDATE tasks SET cancel_requested = 1, updated_at = now() WHERE id = p_id AND status = 'In Progress';
        RETURN v_status;
    ELSE
        RETURN v_status;
    END IF;
    PERFORM headless_propagate_end(p_id, v_type, 'Cancelled', v_msg, v_parent);
    RETURN 'Cancelled';
END
$$;

-- ------------------------------------------------------------------ who may execute what
-- Supabase grants EXECUTE on new functions to everyone: take it back, then grant each door.
REVOKE ALL ON FUNCTION headless_claim(text, double precision, text[]),
    headless_claim_for_user(text, double precision, text[], uuid),
    headless_worker_scope(text), headless_token_hash(text), headless_in_scope(text, uuid),
    headless_user_owns_project(text), headless_user_owns_task(text),
    headless_propagate_end(text, text, text, text, text),
    worker_claim(text, double precision, text[], text),
    worker_heartbeat(text, text, integer, double precision, real, text, text),
    worker_complete(text, text, integer, text, jsonb, text),
    worker_end(text, text, integer, text, text, text),
    worker_retry_later(text, text, integer, text, double precision, text),
    worker_hand_back(text, text, integer, text),
    worker_reclaim_expired(text),
    cancel_task(text), insert_task(text, text, jsonb, text, text, integer, text),
    create_worker_token(text), revoke_worker_token(uuid)
    FROM PUBLIC, anon, authenticated;
-- Policies call these as the querying user.
GRANT EXECUTE ON FUNCTION headless_user_owns_project(text), headless_user_owns_task(text) TO authenticated;
-- Workers: the service role, or anon carrying a personal worker token (checked inside each function).
GRANT EXECUTE ON FUNCTION
    worker_claim(text, double precision, text[], text),
    worker_heartbeat(text, text, integer, double precision, real, text, text),
    worker_complete(text, text, integer, text, jsonb, text),
    worker_end(text, text, integer, text, text, text),
    worker_retry_later(text, text, integer, text, double precision, text),
    worker_hand_back(text, text, integer, text),
    worker_reclaim_expired(text)
    TO service_role, anon;
GRANT EXECUTE ON FUNCTION cancel_task(text), insert_task(text, text, jsonb, text, text, integer, text)
    TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION create_worker_token(text), revoke_worker_token(uuid) TO authenticated;

-- ------------------------------------------------------------------ Storage: the outputs bucket
-- Private by default: an app gets signed URLs. An operator who wants public URLs sets public = true.
INSERT INTO storage.buckets (id, name, public) VALUES ('image_uploads', 'image_uploads', false)
    ON CONFLICT (id) DO NOTHING;
-- Workers write with the service role (it bypasses RLS). A project's owner reads its objects: outputs are
-- stored as <project_id>/<file> (source/supabase_outputs.py).
DROP POLICY IF EXISTS headless_outputs_owner_read ON storage.objects;
CREATE POLICY headless_outputs_owner_read ON storage.objects FOR SELECT TO authenticated
    USING (bucket_id = 'image_uploads' AND headless_user_owns_project((storage.foldername(name))[1]));
