//! Driving a recorded move from step to step ([`Mover`]): the work of
//! each step, its one transition point ([`Steps::enter`]), and undoing a
//! move that has not switched.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Executor as _};

use super::{MoveRecord, Step, forget, get, insert, set_step};
use crate::companies::Layout;
use crate::connect::{BackendKey, Connector, SessionLimits};
use crate::copy::{self, PgTools};
use crate::dbname::DbName;
use crate::ddl;
use crate::fleet::Stop;
use crate::tenant::Tenant;
use crate::verify::{self, Contents, Matched};

/// What a move did.
#[derive(Debug, Clone)]
pub struct Moved {
    /// The size of the database copied (this run or the one recorded).
    pub bytes: Option<i64>,
    /// How long this run's copy took.
    pub copy_time: Option<Duration>,
    pub matched: Option<Matched>,
    /// Whether the parked source was dropped.
    pub source_dropped: bool,
    /// How long this run took to reach each step it entered, in order:
    /// where a move's time goes, for the operator and the benchmark.
    pub step_times: Vec<(Step, Duration)>,
    /// When this run began driving the move.
    pub began: Instant,
    /// The source's contents, read during this run's copy in the snapshot
    /// it copied, for the verification.
    pub source: Option<Contents>,
}

/// The master connection, the connector and the knobs a move works with.
pub struct Mover<'a> {
    pub connector: &'a Connector,
    pub layout: &'a Layout,
    pub master: &'a mut PgConnection,
    pub stop: &'a Stop,
    /// Where `pg_dump` and `pg_restore` are (`None`: `PATH`).
    pub pg_bin: Option<PathBuf>,
    /// The tools found there, once a run has looked.
    pub tools: Option<PgTools>,
    /// Told each step as it is done, for the operator.
    pub say: &'a (dyn Fn(&str) + Sync),
}

/// Where [`Steps::enter`] writes a step: on the master connection, or in
/// the switch's own transaction, committed with the step.
enum On<'c> {
    Master(&'c mut PgConnection),
    Switch(sqlx::Transaction<'c, sqlx::Postgres>),
}

/// What entering a step needs besides the master connection, apart from
/// the [`Mover`] so that the switch's transaction can hold that connection.
#[derive(Clone, Copy)]
struct Steps<'a> {
    layout: &'a Layout,
    stop: &'a Stop,
    say: &'a (dyn Fn(&str) + Sync),
}

impl Steps<'_> {
    /// Enters a step of a move, the one way any step is taken: writes it
    /// to the master (a new move's row at [`Step::Started`], a step of the
    /// switch committed with it), records it on `record`, says `said` (the
    /// switch is told once committed; the other steps as their work ends),
    /// then pauses there if a test asked (see [`pause`]).
    async fn enter(
        self,
        on: On<'_>,
        record: &mut MoveRecord,
        step: Step,
        bytes: Option<i64>,
        said: Option<&str>,
    ) -> anyhow::Result<()> {
        match on {
            On::Master(conn) if step == Step::Started => insert(conn, self.layout, record).await?,
            On::Master(conn) => {
                set_step(conn, self.layout, &record.company_id, step, bytes).await?;
            }
            On::Switch(mut tx) => {
                set_step(&mut tx, self.layout, &record.company_id, step, bytes).await?;
                tx.commit().await.context("commit the switch")?;
            }
        }
        record.step = step;
        if let Some(said) = said {
            (self.say)(said);
        }
        pause(step.as_str(), self.stop).await;
        Ok(())
    }
}

impl<'a> Mover<'a> {
    fn steps(&self) -> Steps<'a> {
        Steps {
            layout: self.layout,
            stop: self.stop,
            say: self.say,
        }
    }

    /// Records a new move (step `started`): the tenant is `moving` from
    /// here on.
    pub async fn start(&mut self, record: &mut MoveRecord) -> anyhow::Result<()> {
        self.steps()
            .enter(On::Master(self.master), record, Step::Started, None, None)
            .await
    }

    /// Takes a recorded move from its step to the switch (and, with
    /// `drop_source`, past it). A failure before the switch undoes the move
    /// and returns the error, saying so.
    pub async fn drive(
        &mut self,
        tenant: &Tenant,
        mut record: MoveRecord,
        drop_source: bool,
    ) -> anyhow::Result<Moved> {
        let mut moved = Moved {
            bytes: record.bytes,
            copy_time: None,
            matched: None,
            source_dropped: false,
            step_times: Vec::new(),
            began: Instant::now(),
            source: None,
        };
        let result = self.advance(&mut record, drop_source, &mut moved).await;
        match result {
            Ok(()) => Ok(moved),
            Err(err) if record.step.before_switch() => {
                let plan = record;
                match self.undo(&tenant.id).await {
                    Ok(()) => Err(err.context(format!(
                        "tenant {tenant}: the move to server {} failed and was undone (the tenant is on server {} as before, its database reopened)",
                        plan.to_server, plan.from_server
                    ))),
                    Err(undo) => Err(err.context(format!(
                        "tenant {tenant}: the move to server {} failed, and undoing it failed too ({}); rerun `tenantctl tenant move {} --abort`",
                        plan.to_server,
                        crate::error::render(&undo),
                        tenant.handle()
                    ))),
                }
            }
            Err(err) => Err(err.context(format!("tenant {tenant}"))),
        }
    }

    async fn advance(
        &mut self,
        record: &mut MoveRecord,
        drop_source: bool,
        moved: &mut Moved,
    ) -> anyhow::Result<()> {
        let steps = self.steps();
        loop {
            if record.step.before_switch() && self.stop.is_set() {
                anyhow::bail!("interrupted at step {}", record.step);
            }
            let began = Instant::now();
            if record.step == Step::Switching {
                let switched = async {
                    let tx = self.switch(record).await?;
                    let said = format!(
                        "switched: the master places the tenant on server {}",
                        record.to_server
                    );
                    steps
                        .enter(On::Switch(tx), record, Step::Switched, None, Some(&said))
                        .await
                };
                switched.await.context("switch to the copy")?;
                moved.step_times.push((Step::Switched, began.elapsed()));
                continue;
            }
            let Some(next) = self.work(record, drop_source, moved).await? else {
                return Ok(());
            };
            let bytes = (next == Step::Copied).then_some(moved.bytes).flatten();
            steps
                .enter(On::Master(self.master), record, next, bytes, None)
                .await?;
            moved.step_times.push((next, began.elapsed()));
        }
    }

    /// Does the work that leads from the record's step to the next (but
    /// the switch's), telling the operator; the step it reached, if any.
    async fn work(
        &self,
        plan: &MoveRecord,
        drop_source: bool,
        moved: &mut Moved,
    ) -> anyhow::Result<Option<Step>> {
        Ok(Some(match plan.step {
            Step::Started => {
                self.close_source(plan).await.context("close the source")?;
                (self.say)(&format!(
                    "closed the source: sessions ended, renamed to {} on server {}",
                    plan.parked_name, plan.from_server
                ));
                Step::SourceClosed
            }
            Step::SourceClosed => {
                let started = Instant::now();
                let (bytes, source) = self.copy(plan).await.context("copy the database")?;
                moved.bytes = Some(bytes);
                moved.source = Some(source);
                moved.copy_time = Some(started.elapsed());
                (self.say)(&format!(
                    "copied {} to {} on server {}",
                    crate::text::format_bytes(moved.bytes.unwrap_or_default()),
                    plan.incoming_name,
                    plan.to_server
                ));
                Step::Copied
            }
            Step::Copied => {
                let matched = self.verify_and_close(plan, moved.source.take()).await?;
                (self.say)(&format!(
                    "verified: {} tables, {} rows, {} sequences, {} migrations match",
                    matched.tables, matched.rows, matched.sequences, matched.migrations
                ));
                moved.matched = Some(matched);
                Step::Verified
            }
            Step::Verified => Step::Switching,
            Step::Switched if drop_source => {
                self.drop_parked(plan).await.context("drop the source")?;
                moved.source_dropped = true;
                (self.say)(&format!(
                    "dropped the source {} on server {}",
                    plan.parked_name, plan.from_server
                ));
                Step::Done
            }
            // The switch is [`Self::advance`]'s own.
            Step::Switching | Step::Switched | Step::Done => return Ok(None),
        }))
    }

    /// Verifies the copy and closes the parked source to connections: at
    /// once when the source was read during the copy (closing ends every
    /// session on the source, which a verification reading it would be).
    /// An undo reopens a source closed before a mismatch was found.
    async fn verify_and_close(
        &self,
        plan: &MoveRecord,
        source: Option<Contents>,
    ) -> anyhow::Result<Matched> {
        let matched = if let Some(source) = &source {
            let (matched, closed) =
                tokio::join!(self.verify(plan, Some(source)), self.close_parked(plan));
            let matched = matched.context("verify the copy")?;
            closed.context("close the source to connections")?;
            matched
        } else {
            let matched = self.verify(plan, None).await.context("verify the copy")?;
            self.close_parked(plan)
                .await
                .context("close the source to connections")?;
            matched
        };
        Ok(matched)
    }

    /// Closes the verified, parked source to connections and ends any
    /// session that got in meanwhile.
    async fn close_parked(&self, plan: &MoveRecord) -> anyhow::Result<()> {
        self.connector
            .with_maintenance(&plan.from_server, |conn, _| {
                Box::pin(async move {
                    ddl::allow_connections(conn, &plan.parked_name, false).await?;
                    ddl::end_sessions(conn, &plan.parked_name).await
                })
            })
            .await
    }

    /// Ends the source's sessions and renames it to its parked name (done
    /// already if only the parked name exists).
    async fn close_source(&self, plan: &MoveRecord) -> anyhow::Result<()> {
        self.connector
            .with_maintenance(&plan.from_server, |conn, _| {
                Box::pin(rename_once(
                    conn,
                    &plan.db_name,
                    &plan.parked_name,
                    move || {
                        format!(
                            "both {} and {} exist on server {}",
                            plan.db_name, plan.parked_name, plan.from_server
                        )
                    },
                    move || {
                        format!(
                            "database {} is not on server {}",
                            plan.db_name, plan.from_server
                        )
                    },
                ))
            })
            .await
    }

    /// Creates the copy, empty, like the source, and restores the source
    /// into it (a copy left by an interrupted run is dropped first), while
    /// reading the source for the verification in the snapshot `pg_dump`
    /// copies. Returns the source's size and contents.
    async fn copy(&self, plan: &MoveRecord) -> anyhow::Result<(i64, Contents)> {
        let tools = match &self.tools {
            Some(tools) => tools.clone(),
            None => PgTools::find(self.pg_bin.as_deref()).await?,
        };
        let (source_major, like) = self
            .connector
            .with_maintenance(&plan.from_server, |source, _| {
                Box::pin(async move {
                    let major = ddl::server_major(source).await?;
                    let like = ddl::character(source, &plan.parked_name).await?;
                    anyhow::Ok((major, like))
                })
            })
            .await?;
        let (source, key) = self
            .connector
            .connect_tenant_cancellable(
                &plan.from_server,
                &plan.parked_name,
                &SessionLimits::default(),
            )
            .await
            .context("connect to the source")?;
        let key = &key;
        let (tools, like) = (&tools, &like);
        let contents = self
            .connector
            .scoped(source, |source, _| {
                Box::pin(async move {
                    let snapshot = verify::export_snapshot(source).await?;
                    let target_ready =
                        self.connector
                            .with_maintenance(&plan.to_server, |target, _| {
                                Box::pin(async move {
                                    tools.check(source_major, ddl::server_major(target).await?)?;
                                    ddl::drop_force(target, &plan.incoming_name).await?;
                                    ddl::create_empty(target, &plan.incoming_name, like).await
                                })
                            });
                    let dump = copy::Dump {
                        snapshot: Some(snapshot),
                        target_ready,
                    };
                    let (copied, read) = tokio::join!(
                        self.dump_restore(plan, tools, dump),
                        self.read_source(source, key, plan)
                    );
                    let ended = verify::end_snapshot(source).await;
                    copied?;
                    let read = read.context("read the source")?;
                    ended.map(|()| read)
                })
            })
            .await?;
        Ok((like.size_bytes, contents))
    }

    /// Reads the source's side of the verification beside the copy; an
    /// interrupt cancels the read on the server (a count of a large table
    /// would otherwise hold the undo up until it ends).
    async fn read_source(
        &self,
        source: &mut PgConnection,
        key: &BackendKey,
        plan: &MoveRecord,
    ) -> anyhow::Result<Contents> {
        let reading = verify::read_open(source);
        tokio::pin!(reading);
        tokio::select! {
            read = &mut reading => read,
            () = copy::stopped(self.stop) => {
                let _ = self.connector.cancel(key, &plan.parked_name).await;
                reading.await
            }
        }
    }

    async fn dump_restore<F>(
        &self,
        plan: &MoveRecord,
        tools: &PgTools,
        dump: copy::Dump<F>,
    ) -> anyhow::Result<()>
    where
        F: std::future::Future<Output = anyhow::Result<()>>,
    {
        let from_env = self
            .connector
            .tenant_env(&plan.from_server, &plan.parked_name)?;
        let to_env = self
            .connector
            .tenant_env(&plan.to_server, &plan.incoming_name)?;
        let from = copy::End {
            db: plan.parked_name.as_str(),
            env: &from_env,
        };
        let to = copy::End {
            db: plan.incoming_name.as_str(),
            env: &to_env,
        };
        copy::dump_restore(
            tools,
            &self.connector.child_env(),
            (&from, &to),
            dump,
            self.stop,
        )
        .await
    }

    /// Compares the copy with the source: with the source's contents read
    /// during the copy, only the copy is read; else (a resumed move) both.
    async fn verify(
        &self,
        plan: &MoveRecord,
        source: Option<&Contents>,
    ) -> anyhow::Result<Matched> {
        let limits = SessionLimits::default();
        let connector = self.connector;
        let limits = &limits;
        let copied = connector
            .connect_tenant(&plan.to_server, &plan.incoming_name, limits)
            .await
            .context("connect to the copy")?;
        if let Some(source) = source {
            return connector
                .scoped(copied, |copied, _| {
                    Box::pin(verify::compare_with(source, copied))
                })
                .await;
        }
        let source = connector
            .connect_tenant(&plan.from_server, &plan.parked_name, limits)
            .await
            .context("connect to the source")?;
        connector
            .scoped(source, |source, _| {
                Box::pin(async move {
                    connector
                        .scoped(copied, |copied, _| {
                            Box::pin(verify::compare(source, copied))
                        })
                        .await
                })
            })
            .await
    }

    /// Gives the copy the tenant's name, then moves the placement in a
    /// master transaction, returned for the switch's step to commit with it.
    async fn switch(
        &mut self,
        plan: &MoveRecord,
    ) -> anyhow::Result<sqlx::Transaction<'_, sqlx::Postgres>> {
        let company_id = plan.company_id.as_str();
        self.connector
            .with_maintenance(&plan.to_server, |target, _| {
                Box::pin(rename_once(
                    target,
                    &plan.incoming_name,
                    &plan.db_name,
                    move || {
                        format!(
                            "a database {} appeared on server {} during the move",
                            plan.db_name, plan.to_server
                        )
                    },
                    move || format!("the copy is gone from server {}", plan.to_server),
                ))
            })
            .await?;
        pause("target_renamed", self.stop).await;
        let mut tx = self.master.begin().await.context("begin")?;
        tx.execute("SET CONSTRAINTS ALL IMMEDIATE")
            .await
            .context("check the master's deferred constraints as they happen")?;
        // The row as it is now, locked until the switch commits: the
        // application may have repointed the company during the copy.
        let tenant = self
            .layout
            .lock_row(&mut tx, company_id)
            .await?
            .with_context(|| format!("company {company_id} is gone from the master"))?;
        anyhow::ensure!(
            tenant.db_name_raw.as_deref() == Some(plan.db_name.as_str())
                && tenant.server.as_ref() == Ok(&plan.from_server),
            "company {company_id}'s row now names database {} on server {} (the move copied {} from {}): it changed during the move; nothing was switched (`--abort` puts the source back)",
            crate::text::shown(tenant.db_label()),
            crate::text::shown(tenant.server_label()),
            plan.db_name,
            plan.from_server
        );
        self.layout
            .set_server(&mut tx, &tenant, &plan.to_server)
            .await?;
        // As the transaction would commit it, AFTER triggers included.
        let after = self.layout.find_by_id(&mut tx, company_id).await?;
        anyhow::ensure!(
            after
                .as_ref()
                .is_some_and(|row| row.server.as_ref() == Ok(&plan.to_server)
                    && row.db_name_raw.as_deref() == Some(plan.db_name.as_str())),
            "the master did not keep company {company_id} on server {} (a trigger on its table changed the row); nothing was switched (`--abort` puts the source back)",
            plan.to_server
        );
        Ok(tx)
    }

    async fn drop_parked(&self, plan: &MoveRecord) -> anyhow::Result<()> {
        self.connector
            .with_maintenance(&plan.from_server, |source, _| {
                Box::pin(ddl::drop_force(source, &plan.parked_name))
            })
            .await
    }

    /// Drops the source a switched move kept, and records the move done.
    pub async fn finish(&mut self, record: &MoveRecord) -> anyhow::Result<()> {
        anyhow::ensure!(
            record.step == Step::Switched,
            "the move is at step {}, not switched: nothing to finish",
            record.step
        );
        self.drop_parked(record).await?;
        self.steps()
            .enter(
                On::Master(self.master),
                &mut record.clone(),
                Step::Done,
                None,
                None,
            )
            .await
    }

    /// Undoes a move that has not switched, reading where it stands from
    /// the master: reopens the source under its own name, then drops
    /// whatever copy there is, then forgets the move.
    pub async fn undo(&mut self, company_id: &str) -> anyhow::Result<()> {
        let Some(record) = get(self.master, self.layout, company_id).await? else {
            return Ok(());
        };
        anyhow::ensure!(
            record.step.before_switch(),
            "the move already switched to server {}: there is nothing to undo (move it back instead)",
            record.to_server
        );
        let plan = &record;
        self.connector
            .with_maintenance(&plan.from_server, |source, _| {
                Box::pin(reopen_source(source, plan))
            })
            .await
            .context("reopen the source")?;
        self.connector
            .with_maintenance(&plan.to_server, |target, _| {
                Box::pin(drop_copy(target, plan))
            })
            .await
            .context("drop the copy")?;
        forget(self.master, self.layout, company_id).await
    }
}

/// Reopens a source an undone move parked under its own name (it is under
/// it already when the move had not parked it yet).
async fn reopen_source(source: &mut PgConnection, plan: &MoveRecord) -> anyhow::Result<()> {
    if ddl::exists(source, &plan.parked_name).await? {
        ddl::allow_connections(source, &plan.parked_name, true).await?;
        anyhow::ensure!(
            !ddl::exists(source, &plan.db_name).await?,
            "a new database {} exists on server {}; the source is kept as {}",
            plan.db_name,
            plan.from_server,
            plan.parked_name
        );
        ddl::rename(source, &plan.parked_name, &plan.db_name).await?;
    } else {
        anyhow::ensure!(
            ddl::exists(source, &plan.db_name).await?,
            "neither {} nor {} is on server {}",
            plan.db_name,
            plan.parked_name,
            plan.from_server
        );
    }
    Ok(())
}

/// Drops whatever copy an undone move made on the target.
async fn drop_copy(target: &mut PgConnection, plan: &MoveRecord) -> anyhow::Result<()> {
    let incoming = ddl::exists(target, &plan.incoming_name).await?;
    if incoming {
        ddl::drop_force(target, &plan.incoming_name).await?;
    } else if plan.step == Step::Switching && ddl::exists(target, &plan.db_name).await? {
        // Renamed by the switch that did not reach the master.
        ddl::drop_force(target, &plan.db_name).await?;
    }
    Ok(())
}

/// Renames `from` to `to`, unless the run interrupted at this step already
/// did (only `to` exists). Both names, or neither, is an error the caller
/// words.
async fn rename_once(
    conn: &mut PgConnection,
    from: &DbName,
    to: &DbName,
    both: impl FnOnce() -> String,
    neither: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    match (ddl::exists(conn, from).await?, ddl::exists(conn, to).await?) {
        (true, false) => ddl::rename(conn, from, to).await,
        (false, true) => Ok(()),
        (true, true) => Err(anyhow::anyhow!(both())),
        (false, false) => Err(anyhow::anyhow!(neither())),
    }
}

/// A test hook (debug builds only): with `TENANTCTL_TEST_MOVE_PAUSE` set
/// to a step's name, the move says `paused after <step>` on stderr once it
/// is there, then waits until the file `TENANTCTL_TEST_MOVE_RESUME` names
/// exists, or it is interrupted, or killed.
async fn pause(after: &str, stop: &Stop) {
    #[cfg(debug_assertions)]
    if std::env::var("TENANTCTL_TEST_MOVE_PAUSE").is_ok_and(|p| p == after) {
        crate::output::warn(format_args!("paused after {after}"));
        let resume = std::env::var_os("TENANTCTL_TEST_MOVE_RESUME").map(PathBuf::from);
        while !stop.is_set() && !resume.as_ref().is_some_and(|f| f.exists()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = (after, stop);
}
