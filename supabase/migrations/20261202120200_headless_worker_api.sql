-- The rest of what a worker needs over HTTP (source/store/rest_store.py): registration, children of
-- orchestrators, reading other tasks' outputs, the output cache, and "is there work left". Same rules as
-- the previous migration: SECURITY DEFINER, search_path set, service role or a worker token (scoped).

CREATE OR REPLACE FUNCTION worker_register(p_worker text, p_host text, p_pid integer, p_version text,
                                           p_token text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM headless_worker_scope(p_token);
    INSERT INTO workers (id, host, pid, started_at, last_seen_at, current_task_id, version, status)
        VALUES (p_worker, p_host, p_pid, now(), now(), NULL, p_version, 'running')
        ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, started_at = excluded.started_at,
            last_seen_at = excluded.last_seen_at, current_task_id = NULL, version = excluded.version,
            status = 'running';
END
$$;

CREATE OR REPLACE FUNCTION worker_seen(p_worker text, p_task_id text, p_status text, p_token text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM headless_worker_scope(p_token);
    UPDATE workers SET last_seen_at = now(), current_task_id = p_task_id, status = p_status WHERE id = p_worker;
END
$$;

-- An orchestrator's children (ids and order computed by the worker, as for the direct store), inserted
-- with the orchestrator set waiting, in one transaction; a re-run inserts nothing twice and picks up
-- children that already finished.
CREATE OR REPLACE FUNCTION worker_spawn_children(p_id text, p_worker text, p_attempt integer, p_children jsonb,
                                                 p_token text DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_user uuid := headless_worker_scope(p_token);
    v_project text;
    v_priority integer;
    v_max integer;
    c jsonb;
    v_deps text[];
    v_missing text;
    v_status text;
    v_output text;
    v_result jsonb;
    v_error text;
BEGIN
    UPDATE tasks SET awaiting_children = 1, worker_id = NULL, lease_expires_at = NULL,
                     progress_message = 'waiting for child tasks', updated_at = now()
        WHERE id = p_id AND status = 'In Progress' AND worker_id = p_worker AND attempts = p_attempt
          AND headless_in_scope(p_id, v_user)
        RETURNING project_id, priority, max_attempts INTO v_project, v_priority, v_max;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    FOR c IN SELECT value FROM jsonb_array_elements(p_children) LOOP
        v_deps := ARRAY(SELECT jsonb_array_elements_text(coalesce(c -> 'depends_on', '[]'::jsonb)));
        SELECT d INTO v_missing FROM unnest(v_deps) d WHERE NOT EXISTS (SELECT 1 FROM tasks WHERE id = d) LIMIT 1;
        IF v_missing IS NOT NULL THEN
            RAISE EXCEPTION 'depends-on task % does not exist', v_missing USING ERRCODE = 'P0002';
        END IF;
        INSERT INTO tasks (id, task_type, params, status, dependant_on, project_id, priority, max_attempts,
                           parent_task_id, completes_parent, created_at, updated_at)
            VALUES (c ->> 'id', c ->> 'task_type', c -> 'params', 'Queued', v_deps[1], v_project,
                    coalesce((c ->> 'priority')::integer, v_priority, 0),
                    coalesce((c ->> 'max_attempts')::integer, v_max, 3), p_id,
                    coalesce((c ->> 'completes_parent')::integer, 0), clock_timestamp(), clock_timestamp())
            ON CONFLICT (id) DO NOTHING;
        IF FOUND AND array_length(v_deps, 1) > 1 THEN
            INSERT INTO task_dependencies (task_id, depends_on)
                SELECT DISTINCT c ->> 'id', d FROM unnest(v_deps) d ON CONFLICT DO NOTHING;
        END IF;
    END LOOP;
    FOR c IN SELECT value FROM jsonb_array_elements(p_children) LOOP
        SELECT status, output_location, result, error_message INTO v_status, v_output, v_result, v_error
            FROM tasks WHERE id = c ->> 'id';
        IF coalesce((c ->> 'completes_parent')::integer, 0) <> 0 AND v_status = 'Complete' THEN
            UPDATE tasks SET status = 'Complete', output_location = v_output, result = v_result, progress = 1,
                             awaiting_children = 0, progress_message = NULL, generation_processed_at = now(),
                             updated_at = now()
                WHERE id = p_id AND status = 'In Progress' AND awaiting_children = 1;
        ELSIF v_status IN ('Failed', 'Cancelled') THEN
            UPDATE tasks SET status = v_status, awaiting_children = 0, generation_processed_at = now(),
                             updated_at = now(),
                             error_message = format('child task %s (%s) %s: %s', c ->> 'id', c ->> 'task_type',
                                                    lower(v_status), coalesce(v_error, ''))
                WHERE id = p_id AND status = 'In Progress' AND awaiting_children = 1;
        END IF;
    END LOOP;
    RETURN true;
END
$$;

-- Another task's output (a stitch reading its segments), within the caller's scope.
CREATE OR REPLACE FUNCTION worker_output_of(p_id text, p_token text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_user uuid := headless_worker_scope(p_token);
BEGIN
    RETURN (SELECT output_location FROM tasks WHERE id = p_id AND status = 'Complete'
            AND headless_in_scope(p_id, v_user));
END
$$;

-- The output cache is shared by every project: only the service role reads or writes it (a personal
-- worker's entry could otherwise be served to other users).
CREATE OR REPLACE FUNCTION worker_cache_get(p_key text, p_token text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF headless_worker_scope(p_token) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    RETURN (SELECT output_location FROM output_cache WHERE cache_key = p_key);
END
$$;

CREATE OR REPLACE FUNCTION worker_cache_put(p_key text, p_location text, p_task_id text,
                                            p_token text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF headless_worker_scope(p_token) IS NOT NULL THEN
        RETURN;
    END IF;
    INSERT INTO output_cache (cache_key, output_location, task_id, created_at) VALUES (p_key, p_location, p_task_id, now())
        ON CONFLICT (cache_key) DO UPDATE SET output_location = excluded.output_location, task_id = excluded.task_id;
END
$$;

-- Counts by status (of the caller's scope), for a worker deciding whether work may still come.
CREATE OR REPLACE FUNCTION worker_counts(p_types text[] DEFAULT NULL, p_token text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_user uuid := headless_worker_scope(p_token);
BEGIN
    RETURN coalesce((SELECT jsonb_object_agg(status, n) FROM (
        SELECT status, count(*) AS n FROM tasks t
        WHERE (p_types IS NULL OR t.task_type = ANY(p_types))
          AND (v_user IS NULL OR t.project_id IN (SELECT id FROM projects WHERE user_id = v_user))
        GROUP BY status) s), '{}'::jsonb);
END
$$;

-- The schema a worker expects: a worker refuses to start against a project missing these migrations.
CREATE OR REPLACE FUNCTION worker_api_version() RETURNS integer
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$ SELECT 1 $$;

REVOKE ALL ON FUNCTION worker_register(text, text, integer, text, text), worker_seen(text, text, text, text),
    worker_spawn_children(text, text, integer, jsonb, text), worker_output_of(text, text),
    worker_cache_get(text, text), worker_cache_put(text, text, text, text), worker_counts(text[], text),
    worker_api_version()
    FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION worker_register(text, text, integer, text, text), worker_seen(text, text, text, text),
    worker_spawn_children(text, text, integer, jsonb, text), worker_output_of(text, text),
    worker_cache_get(text, text), worker_cache_put(text, text, text, text), worker_counts(text[], text),
    worker_api_version()
    TO service_role, anon;
