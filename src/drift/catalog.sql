-- A database's schema, read from the catalog as raw rows: one cheap
-- statement per catalog, all sent in one simple-protocol message (one round
-- trip). Each tenant is read on a fresh connection, which pays for parsing,
-- planning and warming its catalog caches: so the statements stay plain
-- (few functions, no subplans to speak of) and the names, properties and
-- repair statements are assembled in Rust (src/drift/build.rs). Text comes
-- from the server's own deparsers (pg_get_indexdef, pg_get_constraintdef,
-- format_type, ...), so databases made by the same statements compare
-- equal whatever their OIDs or creation order.
--
-- Each row starts with a tag naming its statement; every column is text.
-- Objects made in the database have OIDs from 16384 up (FirstNormalObjectId);
-- `public` is 2200. Temporary schemas are left out by name, extension
-- members by the `m` rows. A `/*repair*/ ... /*end*/` span is read only for
-- the reference (it is NULL for tenants).
--
-- The deparsers print what the session's settings say: a name outside the
-- search_path comes out qualified, `quote_all_identifiers` quotes every
-- name, IntervalStyle, bytea_output, DateStyle, TimeZone,
-- extra_float_digits, lc_monetary and standard_conforming_strings change
-- how a constant is written. A database or role may set any of them
-- (`ALTER DATABASE ... SET`, which is reported on its own): pinned here for
-- this read only (`set_config(..., true)` ends with the transaction the
-- statements run in, so nothing reaches a pooler's next client), every
-- database is printed alike and the repairs read as they are meant.
--
-- The search_path is pinned empty (pg_catalog alone), as pg_dump does: an
-- operator or function a tenant's user makes in `public` (`>=(oid,
-- integer)`, an exact match where the built-in needs a cast) would
-- otherwise be called by these statements, with tenantctl's privileges.
-- So everything outside pg_catalog comes out qualified, and this first
-- statement names pg_catalog itself: it runs under the tenant's settings.
SELECT 'set', pg_catalog.set_config('search_path', '', true),
       pg_catalog.set_config('quote_all_identifiers', 'off', true),
       pg_catalog.set_config('IntervalStyle', 'postgres', true),
       pg_catalog.set_config('bytea_output', 'hex', true),
       pg_catalog.set_config('DateStyle', 'ISO, MDY', true), pg_catalog.set_config('TimeZone', 'UTC', true),
       pg_catalog.set_config('extra_float_digits', '1', true), pg_catalog.set_config('lc_monetary', 'C', true),
       pg_catalog.set_config('standard_conforming_strings', 'on', true);
SELECT 'n', n.oid::text, quote_ident(n.nspname), pg_get_userbyid(n.nspowner),
       to_json(coalesce(n.nspacl, acldefault('n', n.nspowner))::text[])::text
FROM pg_namespace n
WHERE n.oid >= 16384 OR n.oid = 2200;
SELECT 'c', c.oid::text, c.relnamespace::text, quote_ident(c.relname), c.relkind::text, pg_get_userbyid(c.relowner),
       to_json(coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner))::text[])::text,
       c.relpersistence::text, c.relrowsecurity::text, c.relforcerowsecurity::text, c.relreplident::text,
       array_to_string(c.reloptions, ', '), am.amname::text,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END,
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
       CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END
FROM pg_class c LEFT JOIN pg_am am ON am.oid = c.relam
WHERE c.oid >= 16384 AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c', 'i', 'I');
SELECT 'h', i.inhrelid::text, i.inhparent::text, i.inhseqno::text FROM pg_inherits i WHERE i.inhrelid >= 16384;
SELECT 's', s.seqrelid::text, format_type(s.seqtypid, NULL), s.seqincrement::text, s.seqmin::text, s.seqmax::text,
       s.seqstart::text, s.seqcache::text, s.seqcycle::text
FROM pg_sequence s;
SELECT 'o', d.objid::text, d.refobjid::text, d.refobjsubid::text
FROM pg_depend d
WHERE d.classid = 1259 AND d.objid >= 16384 AND d.refclassid = 1259 AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0;
SELECT 'a', a.attrelid::text, quote_ident(a.attname), format_type(a.atttypid, a.atttypmod), a.attnotnull::text,
       pg_get_expr(ad.adbin, ad.adrelid), a.attidentity::text, a.attgenerated::text,
       CASE WHEN a.attcollation <> t.typcollation THEN a.attcollation::regcollation::text END,
       a.attstorage::text, t.typstorage::text,
       a.attstattarget::text, to_json(a.attacl::text[])::text, a.attnum::text
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
WHERE a.attrelid >= 16384 AND a.attnum > 0 AND NOT a.attisdropped;
SELECT 'k', k.oid::text, quote_ident(k.conname), k.conrelid::text, k.contypid::text, k.contype::text,
       pg_get_constraintdef(k.oid), k.convalidated::text, k.condeferrable::text, k.condeferred::text, k.conindid::text
FROM pg_constraint k
WHERE k.oid >= 16384;
SELECT 'i', i.indexrelid::text, i.indrelid::text, pg_get_indexdef(i.indexrelid), (i.indisvalid AND i.indisready)::text
FROM pg_index i
WHERE i.indexrelid >= 16384;
SELECT 'f', p.oid::text, p.pronamespace::text, quote_ident(p.proname), pg_get_function_identity_arguments(p.oid),
       pg_get_function_result(p.oid), p.prokind::text, l.lanname::text, p.provolatile::text, p.proisstrict::text,
       p.prosecdef::text, p.proleakproof::text, p.proparallel::text, array_to_string(p.proconfig, ', '),
       CASE WHEN p.prokind = 'a' THEN NULL WHEN p.prosrc = '' THEN pg_get_functiondef(p.oid) ELSE p.prosrc END,
       pg_get_userbyid(p.proowner), to_json(coalesce(p.proacl, acldefault('f', p.proowner))::text[])::text,
       CASE WHEN p.prokind = 'a' THEN
           (SELECT format('SFUNC = %s, STYPE = %s, FINALFUNC = %s, INITCOND = %s, COMBINEFUNC = %s',
                          ag.aggtransfn::regproc, format_type(ag.aggtranstype, NULL),
                          ag.aggfinalfn::regproc, ag.agginitval, ag.aggcombinefn::regproc)
            FROM pg_aggregate ag WHERE ag.aggfnoid = p.oid) END,
       /*repair*/CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) END/*end*/,
       pg_get_function_arguments(p.oid)
FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
WHERE p.oid >= 16384;
-- Internal triggers (those enforcing a foreign key) too: `ALTER TABLE ...
-- DISABLE TRIGGER ALL` disables them, and the key is no longer enforced.
SELECT 't', t.tgrelid::text, quote_ident(t.tgname), CASE WHEN NOT t.tgisinternal THEN pg_get_triggerdef(t.oid) END,
       t.tgenabled::text, t.oid::text, t.tgisinternal::text, t.tgconstraint::text
FROM pg_trigger t
WHERE t.oid >= 16384;
SELECT 'p', po.polrelid::text, quote_ident(po.polname), po.polpermissive::text, po.polcmd::text,
       array_to_string(ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END
                             FROM unnest(po.polroles) r ORDER BY 1), ', '),
       pg_get_expr(po.polqual, po.polrelid), pg_get_expr(po.polwithcheck, po.polrelid)
FROM pg_policy po;
SELECT 'r', r.ev_class::text, quote_ident(r.rulename), pg_get_ruledef(r.oid), r.ev_enabled::text
FROM pg_rewrite r
WHERE r.oid >= 16384 AND r.rulename <> '_RETURN';
SELECT 'y', t.oid::text, t.typnamespace::text, quote_ident(t.typname), t.typtype::text,
       format_type(t.typbasetype, t.typtypmod), t.typnotnull::text, t.typdefault,
       CASE WHEN t.typtype = 'd' AND t.typcollation <> 0 AND t.typcollation <> b.typcollation
            THEN t.typcollation::regcollation::text END,
       pg_get_userbyid(t.typowner), format_type(rg.rngsubtype, NULL)
FROM pg_type t
LEFT JOIN pg_type b ON b.oid = t.typbasetype
LEFT JOIN pg_range rg ON rg.rngtypid = t.oid
WHERE t.oid >= 16384 AND t.typtype IN ('e', 'd', 'r');
SELECT 'e', e.enumtypid::text, quote_literal(e.enumlabel) FROM pg_enum e ORDER BY e.enumtypid, e.enumsortorder;
SELECT 'x', x.oid::text, quote_ident(x.extname), x.extversion, x.extnamespace::regnamespace::text FROM pg_extension x;
-- What each extension holds, named (`table public.t`): its objects are not
-- compared one by one, but which they are is (ALTER EXTENSION ... ADD would
-- otherwise hide any object from the comparison).
SELECT 'm', d.classid::text, d.objid::text, d.refobjid::text, pg_describe_object(d.classid, d.objid, 0)
FROM pg_depend d WHERE d.refclassid = 3079 AND d.deptype = 'e';
SELECT 'd', pg_get_userbyid(da.defaclrole), da.defaclnamespace::text, da.defaclobjtype::text,
       to_json(da.defaclacl::text[])::text, to_json(acldefault(da.defaclobjtype, da.defaclrole)::text[])::text
FROM pg_default_acl da;
SELECT 'z', st.stxrelid::text, st.stxnamespace::text, quote_ident(st.stxname), pg_get_statisticsobjdef(st.oid)
FROM pg_statistic_ext st;
SELECT 'v', et.oid::text, quote_ident(et.evtname), et.evtevent::text, et.evtfoid::regproc::text, et.evtenabled::text,
       array_to_string(et.evttags, ', ')
FROM pg_event_trigger et;
SELECT 'l', co.oid::text, co.collnamespace::text, quote_ident(co.collname), co.collprovider::text, co.collcollate,
       co.collctype, co.collisdeterministic::text
FROM pg_collation co WHERE co.oid >= 16384;
SELECT 'q', ca.oid::text, format_type(ca.castsource, NULL), format_type(ca.casttarget, NULL),
       CASE WHEN ca.castfunc = 0 THEN NULL ELSE ca.castfunc::regprocedure::text END, ca.castcontext::text, ca.castmethod::text
FROM pg_cast ca WHERE ca.oid >= 16384;
SELECT 'u', op.oid::text, op.oprnamespace::text, op.oprname::text, format_type(NULLIF(op.oprleft, 0), NULL),
       format_type(op.oprright, NULL), op.oprcode::regproc::text, format_type(op.oprresult, NULL)
FROM pg_operator op WHERE op.oid >= 16384;
SELECT 'P', p.oid::text, quote_ident(p.pubname), p.puballtables::text,
       concat_ws(', ', CASE WHEN p.pubinsert THEN 'insert' END, CASE WHEN p.pubupdate THEN 'update' END,
                 CASE WHEN p.pubdelete THEN 'delete' END, CASE WHEN p.pubtruncate THEN 'truncate' END),
       p.pubviaroot::text, to_json(ARRAY(SELECT r.prrelid::text FROM pg_publication_rel r WHERE r.prpubid = p.oid))::text
FROM pg_publication p;
SELECT 'F', s.oid::text, quote_ident(s.srvname), quote_ident(w.fdwname), s.srvtype, s.srvversion,
       array_to_string(s.srvoptions, ', ')
FROM pg_foreign_server s JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw;
SELECT 'g', rs.setrole::text, pg_get_userbyid(rs.setrole), to_json(rs.setconfig)::text, quote_ident(current_database())
FROM pg_db_role_setting rs
WHERE rs.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database());
