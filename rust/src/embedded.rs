//! The embedded store's hot statements: the queued jobs a worker picks up, and a
//! worker turn — the plain outcomes it stores and the jobs it claims — in one SQLite
//! transaction, on a connection of their own (rusqlite, linked to the same system
//! `libsqlite3` as Python's `sqlite3` module, so that both connections' POSIX locks
//! are one library's: two copies of SQLite in one process would release each
//! other's locks).
//!
//! The schema is the Python store's (`fairqueue/storage/sqlite.py` creates and
//! migrates it, and names the columns a claim returns); these are the only
//! statements of the store kept here, and the
//! Python store runs them for every turn it can (plain outcomes, claims without
//! caps, rate limits or pauses), so one conformance suite covers both. Running them
//! here costs about half of what the same statements cost through `sqlite3`
//! (binding 64 ids, building row tuples, and the interpreter held in between).

use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, OptionalExtension, TransactionBehavior};

use crate::error::{CoreError, CoreResult};

/// Ids per statement at most (SQLite's default limit of bound parameters is 32,766).
const CHUNK: usize = 500;

/// A queued job as a worker's dispatcher takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub id: i64,
    pub org: String,
    pub kind: String,
    pub run_at: Option<f64>,
    pub key: Option<String>,
    pub priority: i64,
    pub cost: i64,
    pub attempts: i64,
    pub ready_seq: i64,
    pub queue: String,
}

/// A plain outcome: the job completed, with nothing to store but its end.
#[derive(Debug, Clone, PartialEq)]
pub struct PlainFinish {
    pub id: i64,
    pub worker: String,
    pub at: f64,
    /// Whether its handler ran (it counts as a handler attempt).
    pub ran: bool,
}

/// What one turn stored and claimed.
#[derive(Debug, Default)]
pub struct Turn {
    /// The plain outcomes that applied (the worker still held the job's lease).
    pub applied: Vec<i64>,
    /// The claimed jobs' rows (the columns the store was opened with): the asked ones first, then stand-ins.
    pub claimed: Vec<Vec<Value>>,
    /// The settings changed since the worker loaded the version it claimed under: nothing was claimed.
    pub stale: bool,
}

/// A job's line: (org, kind, key, queue).
type Line = (String, String, Option<String>, String);

/// The embedded store's hot statements on a connection of their own.
pub struct Embedded {
    db: Connection,
    /// What a claim returns of each job: the Python store's column list, its one source.
    columns: String,
}

fn storage(error: rusqlite::Error) -> CoreError {
    let code = match &error {
        rusqlite::Error::SqliteFailure(e, _) => e.extended_code,
        _ => 0,
    };
    CoreError::Storage { code, message: error.to_string() }
}

fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// `ids` padded to the next power of two with copies of the last one: an `IN` list
/// matches the same rows, and the statements of a few list lengths stay prepared
/// (one per length up to 64 would overflow the statement cache and be parsed anew
/// each turn).
fn padded(ids: impl Iterator<Item = i64>) -> Vec<Value> {
    let mut values: Vec<Value> = ids.map(Value::Integer).collect();
    if let Some(last) = values.last().cloned() {
        values.resize(values.len().next_power_of_two(), last);
    }
    values
}

impl Embedded {
    /// Opens the store file the Python store created (WAL mode is the file's own); a
    /// claim returns `columns` (a comma-separated list of `fq_jobs` columns) of each job.
    pub fn open(path: &str, columns: &str) -> CoreResult<Self> {
        let db = Connection::open(path).map_err(storage)?;
        // As the Python store's claims and outcomes: they survive a killed process and
        // skip the fsync (a power cut may lose a claim: the job runs again).
        db.execute_batch("PRAGMA busy_timeout = 30000; PRAGMA synchronous = NORMAL;").map_err(storage)?;
        db.set_prepared_statement_cache_capacity(64);
        Ok(Embedded { db, columns: columns.to_owned() })
    }

    /// Where `name` is among the columns a claim returns.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.split(',').position(|c| c.trim() == name)
    }

    /// Queued jobs with `ready_seq` > `after_seq`, in that order, `limit` at most
    /// (negative: all); with `queues` (a JSON array of names), only theirs.
    pub fn pending(&self, after_seq: i64, limit: i64, queues: Option<&str>) -> CoreResult<Vec<Pending>> {
        let served = if queues.is_some() { "AND queue IN (SELECT value FROM json_each(?3)) " } else { "" };
        let sql = format!(
            "SELECT id, org, kind, run_at, key, priority, cost, attempts, ready_seq, queue FROM fq_jobs \
             WHERE status = 'queued' AND ready_seq > ?1 {served}ORDER BY ready_seq LIMIT ?2"
        );
        let mut statement = self.db.prepare_cached(&sql).map_err(storage)?;
        let row = |r: &rusqlite::Row<'_>| {
            Ok(Pending {
                id: r.get(0)?,
                org: r.get(1)?,
                kind: r.get(2)?,
                run_at: r.get(3)?,
                key: r.get(4)?,
                priority: r.get(5)?,
                cost: r.get(6)?,
                attempts: r.get(7)?,
                ready_seq: r.get(8)?,
                queue: r.get(9)?,
            })
        };
        let rows = match queues {
            Some(q) => statement.query_map(rusqlite::params![after_seq, limit, q], row),
            None => statement.query_map(rusqlite::params![after_seq, limit], row),
        }
        .map_err(storage)?;
        rows.collect::<Result<_, _>>().map_err(storage)
    }

    /// One turn in one write transaction: stores `finishes` (a batch job's outcome is
    /// left to the caller: its end may promote its org's held batches) and claims
    /// `asked` for `worker` until `lease_until`, each taken by another process
    /// meanwhile replaced by a stand-in — its line's (org, kind, key, queue)
    /// highest-priority, then oldest, ready queued job not asked for. With `version`,
    /// claims nothing if the stored settings version differs.
    #[allow(clippy::too_many_arguments)]
    pub fn turn(
        &mut self,
        finishes: &[PlainFinish],
        asked: &[i64],
        worker: &str,
        lease_until: f64,
        now: f64,
        version: Option<i64>,
    ) -> CoreResult<Turn> {
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(storage)?;
        let mut turn = Turn::default();
        // One statement for each run of outcomes alike but for their job (a worker's
        // turn: all of them), a chunk of ids at a time.
        let mut rest = finishes;
        while let Some(first) = rest.first() {
            let alike = rest
                .iter()
                .take(CHUNK)
                .take_while(|f| f.worker == first.worker && f.at == first.at && f.ran == first.ran)
                .count();
            let (run, after) = rest.split_at(alike);
            let ids = padded(run.iter().map(|f| f.id));
            let sql = format!(
                "UPDATE fq_jobs SET status = 'completed', finished_at = ?, lease_owner = NULL, lease_expires_at = NULL, \
                 handler_attempts = handler_attempts + ? WHERE id IN ({}) AND status = 'processing' \
                 AND lease_owner = ? AND kind <> 'batch' RETURNING id",
                marks(ids.len())
            );
            let mut params: Vec<Value> = vec![first.at.into(), i64::from(first.ran).into()];
            params.extend(ids);
            params.push(first.worker.clone().into());
            let mut statement = tx.prepare_cached(&sql).map_err(storage)?;
            let applied: std::collections::HashSet<i64> = statement
                .query_map(params_from_iter(params), |r| r.get(0))
                .map_err(storage)?
                .collect::<Result<_, _>>()
                .map_err(storage)?;
            // In the order given, as one statement per outcome would have applied them.
            turn.applied.extend(run.iter().map(|f| f.id).filter(|id| applied.contains(id)));
            rest = after;
        }
        if !asked.is_empty() {
            let current: Option<i64> = match version {
                None => None,
                Some(_) => tx
                    .query_row("SELECT version FROM fq_settings_version WHERE id = 1", [], |r| r.get(0))
                    .optional()
                    .map_err(storage)?,
            };
            if version.is_some() && current != version {
                turn.stale = true;
            } else {
                turn.claimed = Self::claim(&tx, &self.columns, asked, worker, lease_until, now)?;
            }
        }
        tx.commit().map_err(storage)?;
        Ok(turn)
    }

    fn claim(
        tx: &rusqlite::Transaction<'_>,
        columns: &str,
        asked: &[i64],
        worker: &str,
        lease_until: f64,
        now: f64,
    ) -> CoreResult<Vec<Vec<Value>>> {
        let mut claimed = Self::take(tx, columns, asked, worker, lease_until, now)?;
        if claimed.len() == asked.len() {
            return Ok(claimed);
        }
        let got: std::collections::HashSet<i64> = claimed.iter().map(|row| id_of(row)).collect();
        let missing: Vec<i64> = asked.iter().copied().filter(|id| !got.contains(id)).collect();
        // Lines of the asked jobs no longer queued (an unknown id has none), as the Python store's claim.
        let mut lost: Vec<(Line, usize)> = Vec::new();
        for chunk in missing.chunks(CHUNK) {
            let sql = format!("SELECT org, kind, key, queue FROM fq_jobs WHERE id IN ({})", marks(chunk.len()));
            let mut statement = tx.prepare_cached(&sql).map_err(storage)?;
            let rows = statement
                .query_map(params_from_iter(chunk.iter()), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .map_err(storage)?;
            for line in rows {
                let line = line.map_err(storage)?;
                match lost.iter_mut().find(|(l, _)| *l == line) {
                    Some((_, n)) => *n += 1,
                    None => lost.push((line, 1)),
                }
            }
        }
        let skip: std::collections::HashSet<i64> = asked.iter().copied().collect();
        let mut stand_ins = Vec::new();
        for ((org, kind, key, queue), n) in lost {
            let mut statement = tx
                .prepare_cached(
                    "SELECT id FROM fq_jobs INDEXED BY fq_jobs_line_queued WHERE org = ?1 AND kind = ?2 \
                     AND key IS ?3 AND queue = ?4 AND status = 'queued' AND (run_at IS NULL OR run_at <= ?5) \
                     ORDER BY priority DESC, id LIMIT ?6",
                )
                .map_err(storage)?;
            let ids = statement
                .query_map(rusqlite::params![org, kind, key, queue, now, (n + skip.len()) as i64], |r| r.get(0))
                .map_err(storage)?
                .collect::<Result<Vec<i64>, _>>()
                .map_err(storage)?;
            stand_ins.extend(ids.into_iter().filter(|id| !skip.contains(id)).take(n));
        }
        claimed.extend(Self::take(tx, columns, &stand_ins, worker, lease_until, now)?);
        Ok(claimed)
    }

    /// Claims those of `ids` still queued; their rows, in the order of `ids`.
    fn take(
        tx: &rusqlite::Transaction<'_>,
        columns: &str,
        ids: &[i64],
        worker: &str,
        lease_until: f64,
        now: f64,
    ) -> CoreResult<Vec<Vec<Value>>> {
        let mut rows = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let listed = padded(chunk.iter().copied());
            let sql = format!(
                "UPDATE fq_jobs SET status = 'processing', lease_owner = ?, lease_expires_at = ?, \
                 started_at = COALESCE(started_at, ?), attempts = attempts + 1 \
                 WHERE id IN ({}) AND status = 'queued' RETURNING {columns}",
                marks(listed.len())
            );
            let mut statement = tx.prepare_cached(&sql).map_err(storage)?;
            let mut params: Vec<Value> = vec![worker.to_owned().into(), lease_until.into(), now.into()];
            params.extend(listed);
            let width = statement.column_count();
            let found = statement
                .query_map(params_from_iter(params), |r| (0..width).map(|i| r.get::<_, Value>(i)).collect())
                .map_err(storage)?
                .collect::<Result<Vec<Vec<Value>>, _>>()
                .map_err(storage)?;
            let order: std::collections::HashMap<i64, usize> =
                chunk.iter().enumerate().map(|(i, &id)| (id, i)).collect();
            let mut found = found;
            found.sort_by_key(|row| order.get(&id_of(row)).copied().unwrap_or(usize::MAX));
            rows.extend(found);
        }
        Ok(rows)
    }
}

fn id_of(row: &[Value]) -> i64 {
    match row.first() {
        Some(Value::Integer(id)) => *id,
        _ => -1,
    }
}
