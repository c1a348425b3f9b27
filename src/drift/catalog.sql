-- A database's schema, read from the catalog: one statement per kind of
-- object, all sent in one simple-protocol message (one round trip, one
-- snapshot per statement, each planned cheaply: a fresh connection per
-- tenant pays for planning and for warming its catalog caches, and many
-- small statements cost a third of one large one).
--
-- Every statement returns the same eight text columns:
-- kind, name: what the object is, as an operator names it; together they
--   identify it across databases (no OIDs, no database names). Names are
--   quoted as SQL quotes them and qualified unless in `public`.
-- props: a JSON object of what is compared. Text from the server's own
--   deparsers (pg_get_indexdef, pg_get_constraintdef, format_type, ...), so
--   databases made by the same statements compare equal whatever their
--   OIDs or creation order. `owner` and `comment` are compared only when
--   asked for (they often differ by design).
-- create: the statement that makes this object as it is here, where one is
--   obvious (a missing object's repair, taken from the reference).
-- drop: the statement that removes it (an extra object's repair, taken
--   from the tenant).
-- fixes: a JSON object giving, per property, the statement that sets it to
--   its value here (a changed property's repair, taken from the reference).
-- class, oid: the catalog row whose membership in an extension would make
--   this row the extension's (the last statement lists those members):
--   extensions are compared by name, version and schema, not by content.
--
-- System schemas (pg_catalog, information_schema, pg_toast, temporary
-- schemas) are left out.

-- Schemas.
SELECT 'schema', quote_ident(n.nspname),
       jsonb_build_object('owner', pg_get_userbyid(n.nspowner),
                          'comment', (SELECT ds.description FROM pg_description ds WHERE ds.objoid = n.oid AND ds.classoid = 'pg_namespace'::regclass AND ds.objsubid = 0))::text,
       /*repair*/format('CREATE SCHEMA %I;', n.nspname)/*end*/, format('DROP SCHEMA %I;', n.nspname),
       /*repair*/jsonb_build_object('comment', format('COMMENT ON SCHEMA %I IS %s;', n.nspname,
                              coalesce(quote_literal((SELECT ds.description FROM pg_description ds WHERE ds.objoid = n.oid AND ds.classoid = 'pg_namespace'::regclass AND ds.objsubid = 0)), 'NULL')),
                          'owner', format('ALTER SCHEMA %I OWNER TO %I;', n.nspname, pg_get_userbyid(n.nspowner)))::text/*end*/,
       'pg_namespace', n.oid::text
FROM pg_namespace n
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)';

-- Tables, views, materialized views, sequences, foreign tables, composite types.
SELECT kind, shown,
       (jsonb_strip_nulls(jsonb_build_object(
           'unlogged', CASE WHEN c.relpersistence = 'u' THEN true END,
           'row level security', CASE WHEN c.relkind IN ('r', 'p') THEN c.relrowsecurity END,
           'row level security forced', CASE WHEN c.relkind IN ('r', 'p') THEN c.relforcerowsecurity END,
           'replica identity', CASE WHEN c.relkind IN ('r', 'p') THEN c.relreplident::text END,
           'options', array_to_string(c.reloptions, ', '),
           'partitioned by', CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
           'partition of', CASE WHEN c.relispartition THEN
               (SELECT i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhrelid = c.oid)
               || ' ' || pg_get_expr(c.relpartbound, c.oid) END,
           'inherits', CASE WHEN NOT c.relispartition AND c.relkind IN ('r', 'p', 'f') THEN
               (SELECT string_agg(i.inhparent::regclass::text, ', ' ORDER BY i.inhseqno)
                FROM pg_inherits i WHERE i.inhrelid = c.oid) END,
           'access method', CASE WHEN c.relam <> 0 AND am.amname <> 'heap' THEN am.amname END,
           'definition', CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END,
           'sequence', seq.spec,
           'owned by', CASE WHEN c.relkind = 'S' THEN
               (SELECT d.refobjid::regclass::text || '.' || quote_ident(a.attname)
                FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1) END
       )) || jsonb_build_object('owner', pg_get_userbyid(c.relowner),
                                'comment', (SELECT ds.description FROM pg_description ds WHERE ds.objoid = c.oid AND ds.classoid = 'pg_class'::regclass AND ds.objsubid = 0)))::text,
       /*repair*/CASE c.relkind
           WHEN 'v' THEN format('CREATE VIEW %s AS %s;', q, rtrim(pg_get_viewdef(c.oid), ';'))
           WHEN 'm' THEN format('CREATE MATERIALIZED VIEW %s AS %s;', q, rtrim(pg_get_viewdef(c.oid), ';'))
           WHEN 'S' THEN format('CREATE SEQUENCE %s %s;', q, seq.spec)
       END/*end*/,
       format('DROP %s %s;', upper(kind), q),
       /*repair*/jsonb_strip_nulls(jsonb_build_object(
           'row level security', format('ALTER TABLE %s %s ROW LEVEL SECURITY;', q,
                                        CASE WHEN c.relrowsecurity THEN 'ENABLE' ELSE 'DISABLE' END),
           'row level security forced', format('ALTER TABLE %s %s ROW LEVEL SECURITY;', q,
                                               CASE WHEN c.relforcerowsecurity THEN 'FORCE' ELSE 'NO FORCE' END),
           'unlogged', CASE WHEN c.relkind IN ('r', 'S') THEN format('ALTER %s %s SET %s;', upper(kind), q,
                            CASE WHEN c.relpersistence = 'u' THEN 'UNLOGGED' ELSE 'LOGGED' END) END,
           'replica identity', CASE c.relreplident WHEN 'd' THEN format('ALTER TABLE %s REPLICA IDENTITY DEFAULT;', q)
                                   WHEN 'f' THEN format('ALTER TABLE %s REPLICA IDENTITY FULL;', q)
                                   WHEN 'n' THEN format('ALTER TABLE %s REPLICA IDENTITY NOTHING;', q) END,
           'definition', CASE WHEN c.relkind = 'v'
                              THEN format('CREATE OR REPLACE VIEW %s AS %s;', q, rtrim(pg_get_viewdef(c.oid), ';')) END,
           'sequence', CASE WHEN c.relkind = 'S' THEN format('ALTER SEQUENCE %s %s;', q, seq.spec) END,
           'comment', format('COMMENT ON %s %s IS %s;', upper(kind), q,
                             coalesce(quote_literal((SELECT ds.description FROM pg_description ds WHERE ds.objoid = c.oid AND ds.classoid = 'pg_class'::regclass AND ds.objsubid = 0)), 'NULL')),
           'owner', CASE WHEN c.relkind <> 'c' THEN format('ALTER %s %s OWNER TO %I;', upper(kind), q,
                                                           pg_get_userbyid(c.relowner)) END))::text/*end*/,
       'pg_class', c.oid::text
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_am am ON am.oid = c.relam
LEFT JOIN LATERAL (
    SELECT format('AS %s INCREMENT BY %s MINVALUE %s MAXVALUE %s START WITH %s CACHE %s %s',
                  format_type(s.seqtypid, NULL), s.seqincrement, s.seqmin, s.seqmax,
                  s.seqstart, s.seqcache, CASE WHEN s.seqcycle THEN 'CYCLE' ELSE 'NO CYCLE' END) AS spec
    FROM pg_sequence s WHERE s.seqrelid = c.oid) seq ON true,
LATERAL (SELECT
    CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view'
         WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence'
         WHEN 'f' THEN 'foreign table' ELSE 'type' END AS kind,
    CASE WHEN n.nspname = 'public' THEN '' ELSE quote_ident(n.nspname) || '.' END || quote_ident(c.relname) AS shown,
    format('%I.%I', n.nspname, c.relname) AS q) x
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)';

-- Columns, by name: their order and the dropped ones are not compared.
SELECT 'column', shown,
       (jsonb_strip_nulls(jsonb_build_object(
           'type', format_type(a.atttypid, a.atttypmod),
           'not null', a.attnotnull,
           'default', CASE WHEN a.attgenerated = '' THEN def END,
           'identity', CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END,
           'generated', CASE WHEN a.attgenerated <> '' THEN def END,
           'collation', CASE WHEN a.attcollation <> t.typcollation THEN a.attcollation::regcollation::text END,
           'storage', CASE WHEN t.typstorage <> a.attstorage THEN a.attstorage::text END,
           'statistics', NULLIF(a.attstattarget, -1)
       )) || jsonb_build_object('comment', (SELECT ds.description FROM pg_description ds WHERE ds.objoid = c.oid AND ds.classoid = 'pg_class'::regclass AND ds.objsubid = a.attnum)))::text,
       /*repair*/CASE WHEN c.relkind IN ('r', 'p') AND a.attidentity = '' AND a.attgenerated = '' THEN
           format('ALTER TABLE %s ADD COLUMN %I %s%s%s;', q, a.attname, format_type(a.atttypid, a.atttypmod),
                  ' DEFAULT ' || def, CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END)
       END/*end*/,
       CASE WHEN c.relkind = 'c' THEN format('ALTER TYPE %s DROP ATTRIBUTE %I;', q, a.attname)
            WHEN c.relkind = 'f' THEN format('ALTER FOREIGN TABLE %s DROP COLUMN %I;', q, a.attname)
            ELSE format('ALTER TABLE %s DROP COLUMN %I;', q, a.attname) END,
       /*repair*/CASE WHEN c.relkind IN ('r', 'p', 'f') THEN jsonb_build_object(
           'default', CASE WHEN a.attgenerated <> '' THEN NULL
                           WHEN def IS NULL THEN format('ALTER TABLE %s ALTER COLUMN %I DROP DEFAULT;', q, a.attname)
                           ELSE format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT %s;', q, a.attname, def) END,
           'not null', format('ALTER TABLE %s ALTER COLUMN %I %s NOT NULL;', q, a.attname,
                              CASE WHEN a.attnotnull THEN 'SET' ELSE 'DROP' END),
           'statistics', format('ALTER TABLE %s ALTER COLUMN %I SET STATISTICS %s;', q, a.attname, coalesce(a.attstattarget, -1)),
           'storage', format('ALTER TABLE %s ALTER COLUMN %I SET STORAGE %s;', q, a.attname,
                             CASE a.attstorage WHEN 'p' THEN 'PLAIN' WHEN 'e' THEN 'EXTERNAL'
                                               WHEN 'm' THEN 'MAIN' ELSE 'EXTENDED' END),
           'comment', format('COMMENT ON COLUMN %s.%I IS %s;', q, a.attname,
                             coalesce(quote_literal((SELECT ds.description FROM pg_description ds WHERE ds.objoid = c.oid AND ds.classoid = 'pg_class'::regclass AND ds.objsubid = a.attnum)), 'NULL')))
       ELSE '{}'::jsonb END::text/*end*/,
       'pg_class', c.oid::text
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum,
LATERAL (SELECT
    CASE WHEN n.nspname = 'public' THEN '' ELSE quote_ident(n.nspname) || '.' END
        || quote_ident(c.relname) || '.' || quote_ident(a.attname) AS shown,
    format('%I.%I', n.nspname, c.relname) AS q,
    pg_get_expr(ad.adbin, ad.adrelid) AS def) x
WHERE c.relkind IN ('r', 'p', 'f', 'c') AND a.attnum > 0 AND NOT a.attisdropped
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)';

-- Constraints of tables and of domains.
SELECT 'constraint', quote_ident(k.conname) || ' on ' || on_shown,
       jsonb_build_object(
           'definition', regexp_replace(condef, '( DEFERRABLE)?( INITIALLY DEFERRED)?( NOT VALID)?$', ''),
           'deferrable', deferral,
           'valid', k.convalidated,
           'comment', (SELECT ds.description FROM pg_description ds WHERE ds.objoid = k.oid AND ds.classoid = 'pg_constraint'::regclass AND ds.objsubid = 0))::text,
       /*repair*/format('ALTER %s %s ADD CONSTRAINT %I %s;', keyword, q, k.conname, condef)/*end*/,
       format('ALTER %s %s DROP CONSTRAINT %I;', keyword, q, k.conname),
       /*repair*/jsonb_strip_nulls(jsonb_build_object(
           'definition', format('ALTER %1$s %2$s DROP CONSTRAINT %3$I; ALTER %1$s %2$s ADD CONSTRAINT %3$I %4$s;',
                                keyword, q, k.conname, condef),
           'valid', CASE WHEN k.convalidated THEN format('ALTER %s %s VALIDATE CONSTRAINT %I;', keyword, q, k.conname) END,
           'deferrable', CASE WHEN k.contype = 'f' THEN format('ALTER TABLE %s ALTER CONSTRAINT %I %s;', q, k.conname, upper(deferral))
                              ELSE format('ALTER %1$s %2$s DROP CONSTRAINT %3$I; ALTER %1$s %2$s ADD CONSTRAINT %3$I %4$s;',
                                          keyword, q, k.conname, condef) END,
           'comment', format('COMMENT ON CONSTRAINT %I ON %s%s IS %s;', k.conname,
                             CASE WHEN keyword = 'DOMAIN' THEN 'DOMAIN ' ELSE '' END, q,
                             coalesce(quote_literal((SELECT ds.description FROM pg_description ds WHERE ds.objoid = k.oid AND ds.classoid = 'pg_constraint'::regclass AND ds.objsubid = 0)), 'NULL'))))::text/*end*/,
       CASE WHEN k.conrelid <> 0 THEN 'pg_class' ELSE 'pg_type' END,
       CASE WHEN k.conrelid <> 0 THEN k.conrelid ELSE k.contypid END::text
FROM pg_constraint k
JOIN pg_namespace n ON n.oid = k.connamespace
LEFT JOIN pg_class c ON c.oid = k.conrelid
LEFT JOIN pg_type t ON t.oid = k.contypid,
LATERAL (SELECT
    CASE WHEN k.conrelid <> 0 THEN 'TABLE' ELSE 'DOMAIN' END AS keyword,
    CASE WHEN k.conrelid = 0 THEN 'domain ' ELSE '' END
        || CASE WHEN n.nspname = 'public' THEN '' ELSE quote_ident(n.nspname) || '.' END
        || quote_ident(coalesce(c.relname, t.typname)) AS on_shown,
    format('%I.%I', n.nspname, coalesce(c.relname, t.typname)) AS q,
    pg_get_constraintdef(k.oid) AS condef,
    CASE WHEN k.condeferred THEN 'deferrable initially deferred'
         WHEN k.condeferrable THEN 'deferrable initially immediate' ELSE 'not deferrable' END AS deferral) x
WHERE (c.oid IS NOT NULL OR t.oid IS NOT NULL)
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)';

-- Indexes, except those a constraint owns (the constraint stands for them).
SELECT 'index', CASE WHEN n.nspname = 'public' THEN '' ELSE quote_ident(n.nspname) || '.' END || quote_ident(c.relname),
       jsonb_build_object(
           'definition', indexdef,
           'valid', i.indisvalid AND i.indisready,
           'comment', (SELECT ds.description FROM pg_description ds WHERE ds.objoid = c.oid AND ds.classoid = 'pg_class'::regclass AND ds.objsubid = 0))::text,
       /*repair*/indexdef || ';'/*end*/,
       format('DROP INDEX %I.%I;', n.nspname, c.relname),
       /*repair*/jsonb_build_object(
           'definition', format('DROP INDEX %I.%I; %s;', n.nspname, c.relname, indexdef),
           'valid', format('REINDEX INDEX %I.%I;', n.nspname, c.relname),
           'comment', format('COMMENT ON INDEX %I.%I IS %s;', n.nspname, c.relname,
                             coalesce(quote_literal((SELECT ds.description FROM pg_description ds WHERE ds.objoid = c.oid AND ds.classoid = 'pg_class'::regclass AND ds.objsubid = 0)), 'NULL')))::text/*end*/,
       'pg_class', i.indrelid::text
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace,
LATERAL (SELECT pg_get_indexdef(i.indexrelid) AS indexdef) x
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid
                  AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x'));

-- Functions, procedures and aggregates, by signature.
SELECT kind, shown,
       (jsonb_strip_nulls(jsonb_build_object(
           'returns', pg_get_function_result(p.oid),
           'language', l.lanname,
           'volatility', volatility,
           'strict', p.proisstrict,
           'security definer', p.prosecdef,
           'leakproof', p.proleakproof,
           'parallel', parallel,
           'settings', array_to_string(p.proconfig, ', '),
           'body', CASE WHEN p.prokind = 'a' THEN NULL
                        WHEN p.prosrc = '' THEN pg_get_functiondef(p.oid) ELSE p.prosrc END,
           'aggregate', CASE WHEN p.prokind = 'a' THEN
               (SELECT format('SFUNC = %s, STYPE = %s, FINALFUNC = %s, INITCOND = %s, COMBINEFUNC = %s',
                              ag.aggtransfn::regproc, format_type(ag.aggtranstype, NULL),
                              ag.aggfinalfn::regproc, ag.agginitval, ag.aggcombinefn::regproc)
                FROM pg_aggregate ag WHERE ag.aggfnoid = p.oid) END
       )) || jsonb_build_object('owner', pg_get_userbyid(p.proowner),
                                'comment', (SELECT ds.description FROM pg_description ds WHERE ds.objoid = p.oid AND ds.classoid = 'pg_proc'::regclass AND ds.objsubid = 0)))::text,
       /*repair*/CASE WHEN p.prokind IN ('f', 'p') THEN rtrim(pg_get_functiondef(p.oid), E'\n') || ';' END/*end*/,
       format('DROP %s %s;', upper(kind), q),
       /*repair*/CASE WHEN p.prokind IN ('f', 'p') THEN jsonb_build_object(
           'volatility', format('ALTER %s %s %s;', upper(kind), q, volatility),
           'strict', format('ALTER %s %s %s;', upper(kind), q,
                            CASE WHEN p.proisstrict THEN 'STRICT' ELSE 'CALLED ON NULL INPUT' END),
           'security definer', format('ALTER %s %s SECURITY %s;', upper(kind), q,
                                      CASE WHEN p.prosecdef THEN 'DEFINER' ELSE 'INVOKER' END),
           'leakproof', format('ALTER %s %s %sLEAKPROOF;', upper(kind), q,
                               CASE WHEN p.proleakproof THEN '' ELSE 'NOT ' END),
           'parallel', format('ALTER %s %s PARALLEL %s;', upper(kind), q, parallel),
           'comment', format('COMMENT ON %s %s IS %s;', upper(kind), q,
                             coalesce(quote_literal((SELECT ds.description FROM pg_description ds WHERE ds.objoid = p.oid AND ds.classoid = 'pg_proc'::regclass AND ds.objsubid = 0)), 'NULL')),
           'owner', format('ALTER %s %s OWNER TO %I;', upper(kind), q, pg_get_userbyid(p.proowner)))
       ELSE '{}'::jsonb END::text/*end*/,
       'pg_proc', p.oid::text
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN pg_language l ON l.oid = p.prolang,
LATERAL (SELECT pg_get_function_identity_arguments(p.oid) AS args) y,
LATERAL (SELECT
    CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END AS kind,
    CASE WHEN n.nspname = 'public' THEN '' ELSE quote_ident(n.nspname) || '.' END
        || quote_ident(p.proname) || '(' || y.args || ')' AS shown,
    format('%I.%I', n.nspname, p.proname) || '(' || y.args || ')' AS q,
    CASE p.provolatile WHEN 'i' THEN 'IMMUTABLE' WHEN 's' THEN 'STABLE' ELSE 'VOLATILE' END AS volatility,
    CASE p.proparallel WHEN 's' THEN 'SAFE' WHEN 'r' THEN 'RESTRICTED' ELSE 'UNSAFE' END AS parallel) x
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)';

-- Triggers, with whether they fire.
SELECT 'trigger', quote_ident(tg.tgname) || ' on ' || on_shown,
       jsonb_build_object(
           'definition', trigdef,
           'enabled', enabled,
           'comment', (SELECT ds.description FROM pg_description ds WHERE ds.objoid = tg.oid AND ds.classoid = 'pg_trigger'::regclass AND ds.objsubid = 0))::text,
       /*repair*/trigdef || ';' || CASE WHEN tg.tgenabled = 'O' THEN ''
                              ELSE format(' ALTER TABLE %s %s TRIGGER %I;', q, switch, tg.tgname) END/*end*/,
       format('DROP TRIGGER %I ON %s;', tg.tgname, q),
       /*repair*/jsonb_build_object(
           'enabled', format('ALTER TABLE %s %s TRIGGER %I;', q, switch, tg.tgname),
           'definition', format('DROP TRIGGER %I ON %s; %s;', tg.tgname, q, trigdef),
           'comment', format('COMMENT ON TRIGGER %I ON %s IS %s;', tg.tgname, q,
                             coalesce(quote_literal((SELECT ds.description FROM pg_description ds WHERE ds.objoid = tg.oid AND ds.classoid = 'pg_trigger'::regclass AND ds.objsubid = 0)), 'NULL')))::text/*end*/,
       'pg_class', tg.tgrelid::text
FROM pg_trigger tg
JOIN pg_class c ON c.oid = tg.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace,
LATERAL (SELECT
    CASE WHEN n.nspname = 'public' THEN '' ELSE quote_ident(n.nspname) || '.' END || quote_ident(c.relname) AS on_shown,
    format('%I.%I', n.nspname, c.relname) AS q,
    pg_get_triggerdef(tg.oid) AS trigdef,
    CASE tg.tgenabled WHEN 'O' THEN 'enabled' WHEN 'D' THEN 'disabled' WHEN 'R' THEN 'replica' ELSE 'always' END AS enabled,
    CASE tg.tgenabled WHEN 'D' THEN 'DISABLE' WHEN 'R' THEN 'ENABLE REPLICA'
                      WHEN 'A' THEN 'ENABLE ALWAYS' ELSE 'ENABLE' END AS switch) x
WHERE NOT tg.tgisinternal
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)';

-- Row-level security policies (whether RLS is on is a table property).
SELECT 'policy', quote_ident(po.polname) || ' on ' || on_shown,
       jsonb_strip_nulls(jsonb_build_object('as', perm, 'for', cmd, 'to', roles,
                                            'using', qual, 'with check', chk))::text,
       /*repair*/create_policy/*end*/,
       format('DROP POLICY %I ON %s;', po.polname, q),
       /*repair*/(SELECT jsonb_object_agg(k, format('DROP POLICY %I ON %s; %s', po.polname, q, create_policy))
        FROM unnest(ARRAY['as', 'for', 'to', 'using', 'with check']) k)::text/*end*/,
       'pg_class', po.polrelid::text
FROM pg_policy po
JOIN pg_class c ON c.oid = po.polrelid
JOIN pg_namespace n ON n.oid = c.relnamespace,
LATERAL (SELECT
    CASE WHEN n.nspname = 'public' THEN '' ELSE quote_ident(n.nspname) || '.' END || quote_ident(c.relname) AS on_shown,
    format('%I.%I', n.nspname, c.relname) AS q,
    CASE WHEN po.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END AS perm,
    CASE po.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                   WHEN 'd' THEN 'DELETE' ELSE 'ALL' END AS cmd,
    (SELECT string_agg(r, ', ' ORDER BY r)
     FROM (SELECT CASE WHEN o = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(o)) END AS r
           FROM unnest(po.polroles) o) rs) AS roles,
    pg_get_expr(po.polqual, po.polrelid) AS qual,
    pg_get_expr(po.polwithcheck, po.polrelid) AS chk) x,
LATERAL (SELECT format('CREATE POLICY %I ON %s AS %s FOR %s TO %s%s%s;', po.polname, q, perm, cmd, roles,
                       ' USING (' || qual || ')', ' WITH CHECK (' || chk || ')') AS create_policy) y;

-- Rules other than a view's own.
SELECT 'rule', quote_ident(ru.rulename) || ' on ' || ru.ev_class::regclass::text,
       jsonb_build_object('definition', pg_get_ruledef(ru.oid),
                          'enabled', ru.ev_enabled::text)::text,
       /*repair*/pg_get_ruledef(ru.oid)/*end*/,
       format('DROP RULE %I ON %s;', ru.rulename, ru.ev_class::regclass::text),
       '{}',
       'pg_class', ru.ev_class::text
FROM pg_rewrite ru
JOIN pg_class c ON c.oid = ru.ev_class
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE ru.rulename <> '_RETURN'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)';

-- Enums (labels in order), domains, range types.
SELECT CASE t.typtype WHEN 'e' THEN 'enum' WHEN 'd' THEN 'domain' ELSE 'range type' END, shown,
       (jsonb_strip_nulls(jsonb_build_object(
           'labels', labels,
           'type', CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END,
           'not null', CASE WHEN t.typtype = 'd' THEN t.typnotnull END,
           'default', t.typdefault,
           'collation', CASE WHEN t.typtype = 'd' AND t.typcollation <> 0
                             AND t.typcollation <> (SELECT b.typcollation FROM pg_type b WHERE b.oid = t.typbasetype)
                             THEN t.typcollation::regcollation::text END,
           'subtype', CASE WHEN t.typtype = 'r' THEN
               (SELECT format_type(rg.rngsubtype, NULL) FROM pg_range rg WHERE rg.rngtypid = t.oid) END
       )) || jsonb_build_object('owner', pg_get_userbyid(t.typowner),
                                'comment', (SELECT ds.description FROM pg_description ds WHERE ds.objoid = t.oid AND ds.classoid = 'pg_type'::regclass AND ds.objsubid = 0)))::text,
       /*repair*/CASE t.typtype
           WHEN 'e' THEN format('CREATE TYPE %s AS ENUM (%s);', q, labels)
           WHEN 'd' THEN format('CREATE DOMAIN %s AS %s%s%s;', q, format_type(t.typbasetype, t.typtypmod),
                                ' DEFAULT ' || t.typdefault, CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END)
       END/*end*/,
       format('DROP %s %s;', CASE WHEN t.typtype = 'd' THEN 'DOMAIN' ELSE 'TYPE' END, q),
       /*repair*/CASE WHEN t.typtype = 'd' THEN jsonb_build_object(
           'default', CASE WHEN t.typdefault IS NULL THEN format('ALTER DOMAIN %s DROP DEFAULT;', q)
                           ELSE format('ALTER DOMAIN %s SET DEFAULT %s;', q, t.typdefault) END,
           'not null', format('ALTER DOMAIN %s %s NOT NULL;', q, CASE WHEN t.typnotnull THEN 'SET' ELSE 'DROP' END))
       ELSE '{}'::jsonb END::text/*end*/,
       'pg_type', t.oid::text
FROM pg_type t
JOIN pg_namespace n ON n.oid = t.typnamespace,
LATERAL (SELECT
    CASE WHEN n.nspname = 'public' THEN '' ELSE quote_ident(n.nspname) || '.' END || quote_ident(t.typname) AS shown,
    format('%I.%I', n.nspname, t.typname) AS q,
    CASE WHEN t.typtype = 'e' THEN
        (SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
         FROM pg_enum e WHERE e.enumtypid = t.oid) END AS labels) x
WHERE t.typtype IN ('e', 'd', 'r')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)';

-- Extensions: name, version and schema; their members are theirs.
SELECT 'extension', quote_ident(x.extname),
       jsonb_build_object('version', x.extversion, 'schema', x.extnamespace::regnamespace::text)::text,
       /*repair*/format('CREATE EXTENSION IF NOT EXISTS %I WITH SCHEMA %s VERSION %L;', x.extname,
              x.extnamespace::regnamespace::text, x.extversion)/*end*/,
       format('DROP EXTENSION %I;', x.extname),
       /*repair*/jsonb_build_object('version', format('ALTER EXTENSION %I UPDATE TO %L;', x.extname, x.extversion),
                          'schema', format('ALTER EXTENSION %I SET SCHEMA %s;', x.extname,
                                           x.extnamespace::regnamespace::text))::text/*end*/,
       'pg_extension', x.oid::text
FROM pg_extension x;

-- Privileges: who may do what on schemas, tables, sequences, columns and
-- functions, one row per object with its ACL (the defaults spelled out when
-- it has none), turned into one object per grant by the reader: a grantee
-- that is the object's owner becomes `(owner)` there, so databases owned by
-- different roles compare equal.
SELECT 'privileges', on_kind || ' ' || shown,
       jsonb_build_object('acl', to_jsonb(acl::text[]), 'owner', pg_get_userbyid(owner),
                          'target', target, 'columns', cols)::text,
       NULL, NULL, '{}', class, oid::text
FROM (
    SELECT 'schema' AS on_kind, quote_ident(n.nspname) AS shown, 'SCHEMA ' || quote_ident(n.nspname) AS target,
           '' AS cols, n.nspowner AS owner, 'pg_namespace' AS class, n.oid,
           coalesce(n.nspacl, acldefault('n', n.nspowner)) AS acl
    FROM pg_namespace n
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
    UNION ALL
    SELECT CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE 'table' END,
           CASE WHEN n.nspname = 'public' THEN '' ELSE quote_ident(n.nspname) || '.' END || quote_ident(c.relname),
           CASE WHEN c.relkind = 'S' THEN 'SEQUENCE ' ELSE 'TABLE ' END || format('%I.%I', n.nspname, c.relname),
           '', c.relowner, 'pg_class', c.oid,
           coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner))
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
    UNION ALL
    SELECT 'column',
           CASE WHEN n.nspname = 'public' THEN '' ELSE quote_ident(n.nspname) || '.' END
               || quote_ident(c.relname) || '.' || quote_ident(at.attname),
           'TABLE ' || format('%I.%I', n.nspname, c.relname),
           ' (' || quote_ident(at.attname) || ')', c.relowner, 'pg_class', c.oid, at.attacl
    FROM pg_attribute at JOIN pg_class c ON c.oid = at.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE at.attacl IS NOT NULL AND at.attnum > 0 AND NOT at.attisdropped
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
    UNION ALL
    SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END,
           CASE WHEN n.nspname = 'public' THEN '' ELSE quote_ident(n.nspname) || '.' END
               || quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')',
           CASE p.prokind WHEN 'p' THEN 'PROCEDURE ' ELSE 'FUNCTION ' END
               || format('%I.%I', n.nspname, p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')',
           '', p.proowner, 'pg_proc', p.oid, coalesce(p.proacl, acldefault('f', p.proowner))
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
) o;

-- Default privileges for objects created later, by role and schema: each
-- grant beyond what the role's objects get with none set (a role's entry
-- for every schema spells out its own privileges too, which is no drift),
-- and each of those built-in ones the entry revokes.
SELECT CASE WHEN d.revoked THEN 'default privileges revoked' ELSE 'default privileges' END,
       format('%s on %s%s for %s %s %s', d.privilege_type, lower(objects), in_schema,
              quote_ident(pg_get_userbyid(da.defaclrole)), CASE WHEN d.revoked THEN 'from' ELSE 'to' END, who),
       jsonb_build_object('with grant option', d.is_grantable)::text,
       /*repair*/CASE WHEN d.revoked THEN revoke_it ELSE grant_it END/*end*/,
       CASE WHEN d.revoked THEN grant_it ELSE revoke_it END,
       '{}', 'pg_default_acl', da.oid::text
FROM pg_default_acl da,
LATERAL (SELECT
    CASE da.defaclobjtype WHEN 'r' THEN 'TABLES' WHEN 'S' THEN 'SEQUENCES' WHEN 'f' THEN 'FUNCTIONS'
                          WHEN 'T' THEN 'TYPES' ELSE 'SCHEMAS' END AS objects,
    CASE WHEN da.defaclnamespace = 0 THEN '' ELSE ' in schema ' || da.defaclnamespace::regnamespace::text END AS in_schema,
    format('ALTER DEFAULT PRIVILEGES FOR ROLE %I%s', pg_get_userbyid(da.defaclrole),
           CASE WHEN da.defaclnamespace = 0 THEN '' ELSE ' IN SCHEMA ' || da.defaclnamespace::regnamespace::text END) AS alter_for) x,
LATERAL (
    SELECT a.grantee, a.privilege_type, a.is_grantable, false AS revoked
    FROM aclexplode(da.defaclacl) a
    WHERE da.defaclnamespace <> 0
       OR NOT EXISTS (SELECT FROM aclexplode(acldefault(da.defaclobjtype, da.defaclrole)) b
                      WHERE (b.grantee, b.privilege_type, b.is_grantable) = (a.grantee, a.privilege_type, a.is_grantable))
    UNION ALL
    SELECT b.grantee, b.privilege_type, b.is_grantable, true
    FROM aclexplode(acldefault(da.defaclobjtype, da.defaclrole)) b
    WHERE da.defaclnamespace = 0
      AND NOT EXISTS (SELECT FROM aclexplode(da.defaclacl) a
                      WHERE (a.grantee, a.privilege_type) = (b.grantee, b.privilege_type))) d,
LATERAL (SELECT CASE WHEN d.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(d.grantee)) END AS who) g,
LATERAL (SELECT
    format('%s GRANT %s ON %s TO %s%s;', alter_for, d.privilege_type, objects, who,
           CASE WHEN d.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) AS grant_it,
    format('%s REVOKE %s ON %s FROM %s;', alter_for, d.privilege_type, objects, who) AS revoke_it) y;

-- Extended statistics, event triggers, collations, casts and operators
-- made in the database, and the settings of ALTER DATABASE ... SET.
SELECT 'statistics', CASE WHEN n.nspname = 'public' THEN '' ELSE quote_ident(n.nspname) || '.' END || quote_ident(st.stxname),
       jsonb_build_object('definition', pg_get_statisticsobjdef(st.oid))::text,
       /*repair*/pg_get_statisticsobjdef(st.oid) || ';'/*end*/,
       format('DROP STATISTICS %I.%I;', n.nspname, st.stxname),
       '{}', 'pg_class', st.stxrelid::text
FROM pg_statistic_ext st JOIN pg_namespace n ON n.oid = st.stxnamespace
UNION ALL
SELECT 'event trigger', quote_ident(et.evtname),
       jsonb_strip_nulls(jsonb_build_object(
           'event', et.evtevent, 'function', et.evtfoid::regproc::text,
           'enabled', CASE et.evtenabled WHEN 'O' THEN 'enabled' WHEN 'D' THEN 'disabled'
                           WHEN 'R' THEN 'replica' ELSE 'always' END,
           'tags', array_to_string(et.evttags, ', ')))::text,
       NULL,
       format('DROP EVENT TRIGGER %I;', et.evtname),
       /*repair*/jsonb_build_object('enabled', format('ALTER EVENT TRIGGER %I %s;', et.evtname,
           CASE et.evtenabled WHEN 'D' THEN 'DISABLE' WHEN 'R' THEN 'ENABLE REPLICA'
                              WHEN 'A' THEN 'ENABLE ALWAYS' ELSE 'ENABLE' END))::text/*end*/,
       'pg_event_trigger', et.oid::text
FROM pg_event_trigger et
UNION ALL
SELECT 'collation', CASE WHEN n.nspname = 'public' THEN '' ELSE quote_ident(n.nspname) || '.' END || quote_ident(co.collname),
       jsonb_build_object('provider', co.collprovider::text, 'collate', co.collcollate, 'ctype', co.collctype,
                          'deterministic', co.collisdeterministic)::text,
       NULL, format('DROP COLLATION %I.%I;', n.nspname, co.collname), '{}', 'pg_collation', co.oid::text
FROM pg_collation co JOIN pg_namespace n ON n.oid = co.collnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
UNION ALL
SELECT 'cast', format('(%s AS %s)', format_type(ca.castsource, NULL), format_type(ca.casttarget, NULL)),
       jsonb_build_object('function', CASE WHEN ca.castfunc = 0 THEN NULL ELSE ca.castfunc::regprocedure::text END,
                          'context', ca.castcontext::text, 'method', ca.castmethod::text)::text,
       NULL, format('DROP CAST (%s AS %s);', format_type(ca.castsource, NULL), format_type(ca.casttarget, NULL)),
       '{}', 'pg_cast', ca.oid::text
FROM pg_cast ca
WHERE ca.oid >= 16384
UNION ALL
SELECT 'operator', CASE WHEN n.nspname = 'public' THEN '' ELSE quote_ident(n.nspname) || '.' END || op.oprname
           || format('(%s, %s)', coalesce(format_type(NULLIF(op.oprleft, 0), NULL), 'NONE'), format_type(op.oprright, NULL)),
       jsonb_build_object('function', op.oprcode::regproc::text, 'returns', format_type(op.oprresult, NULL))::text,
       NULL, NULL, '{}', 'pg_operator', op.oid::text
FROM pg_operator op JOIN pg_namespace n ON n.oid = op.oprnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
UNION ALL
SELECT 'database setting', split_part(s.setting, '=', 1) ||
           CASE WHEN rs.setrole = 0 THEN '' ELSE ' for ' || quote_ident(pg_get_userbyid(rs.setrole)) END,
       jsonb_build_object('value', substr(s.setting, strpos(s.setting, '=') + 1))::text,
       NULL,
       format('ALTER %s RESET %s;',
              CASE WHEN rs.setrole = 0 THEN format('DATABASE %I', current_database())
                   ELSE format('ROLE %I IN DATABASE %I', pg_get_userbyid(rs.setrole), current_database()) END,
              split_part(s.setting, '=', 1)),
       '{}', 'pg_db_role_setting', '0'
FROM pg_db_role_setting rs, unnest(rs.setconfig) s(setting)
WHERE rs.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database());

-- The members of extensions: the rows above that are theirs.
SELECT 'member', NULL, NULL, NULL, NULL, NULL, d.classid::regclass::text, d.objid::text
FROM pg_depend d
WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e';
