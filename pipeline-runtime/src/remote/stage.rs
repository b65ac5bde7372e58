//! `remote_region`: the builder method and its launch. Three kinds of threads share a
//! [`Schedule`]: one cuts the input into tickets, one per lane works them (local or
//! remote), and one delivers the answers downstream in order.

use std::sync::Arc;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::lanes::{self, Peer};
use super::schedule::{Delivery, LaneCounts, Schedule, POLL};
use super::wire::MAX_TICKET_BYTES;
use super::RemoteWorkers;
use crate::block_on::block_on_until;
use crate::builder::{fn_name, StageBuilder};
use crate::failure::{BuildError, ItemError, StageFailureKind};
use crate::hook::TaskOutcome;
use crate::launch::{Launch, LaunchFn};
use crate::process::channel::{decode, encode};
use crate::process::region::RegionStart;
use crate::process::registry::{self, Kind};
use crate::queue::{Msg, Rx, Tx};
use crate::resume::Tag;
use crate::stage::pipe::options::PipeOptions;
use crate::stage::pipe::Order;
use crate::stage::StageCtx;
use crate::stats::StageKind;

impl<T: Send + 'static> StageBuilder<T> {
    /// A region run on remote workers (see [`remote`](crate::remote)): the stages that
    /// `region` adds run, as a nested pipeline, in local lanes of this process first and in
    /// the workers of `workers` for the deficit, on tickets of inputs; each ticket's outputs
    /// are delivered once, whole, whatever the workers do.
    ///
    /// `region` is a named `fn` registered with [`process_region!`](crate::process_region)
    /// (the workers' binary must register it too). Options: `order` (`Order::Input`
    /// delivers tickets in input order), `buffer`, `name`. Resume tracking does not pass
    /// through it yet.
    pub fn remote_region<U, F>(self, region: F, workers: &RemoteWorkers) -> StageBuilder<U>
    where
        T: Serialize,
        U: DeserializeOwned + Send + 'static,
        F: Fn(StageBuilder<T>) -> StageBuilder<U> + Send + Sync + 'static,
    {
        let default_name = fn_name::<F>().unwrap_or_else(|| "remote region".to_owned());
        let key = std::any::type_name::<F>();
        let mut errors = Vec::new();
        if key.starts_with("fn(") || key.contains("{{closure}}") {
            errors.push(BuildError::new(format!(
                "remote region `{default_name}`: a worker finds its region by name; pass a \
                 named `fn` registered with `process_region!`"
            )));
        } else if let Err(e) = registry::check(key, Kind::Region) {
            errors.push(BuildError::new(format!(
                "remote region `{default_name}`: {e}"
            )));
        }
        // Each lane and worker builds the region from the registry, by name.
        drop(region);
        let workers = workers.clone();
        self.then(
            "a remote region",
            PipeOptions::default(),
            move |prev: LaunchFn<T>, opts, chain| {
                let name = opts.name.clone().unwrap_or(default_name);
                chain.errors.extend(errors);
                let mut error = |m: String| chain.errors.push(BuildError::new(m));
                if opts.concurrency.is_some() || opts.executor.is_some() {
                    error(format!(
                        "remote region `{name}`: its lanes are `RemoteWorkers::local_lanes` and \
                         its workers; `concurrency` and `executor` are not options of it"
                    ));
                }
                if opts.max_failures.is_some() {
                    error(format!(
                        "`max_failures` is not an option of remote region `{name}`: set it on \
                         a stage inside the region's fn"
                    ));
                }
                if workers.local_lanes + workers.addrs.len() == 0 {
                    error(format!(
                        "remote region `{name}` has neither workers nor local lanes"
                    ));
                }
                chain.shape.push("remote region".to_owned());
                let plan = Plan {
                    key,
                    name,
                    workers,
                    input_order: opts.order == Order::Input,
                    buffer: opts.buffer,
                };
                launch(prev, plan)
            },
        )
    }
}

struct Plan {
    key: &'static str,
    name: String,
    workers: RemoteWorkers,
    input_order: bool,
    buffer: Option<usize>,
}

fn launch<T, U>(prev: LaunchFn<T>, plan: Plan) -> LaunchFn<U>
where
    T: Serialize + Send + 'static,
    U: DeserializeOwned + Send + 'static,
{
    Box::new(move |l: &mut Launch, out_cap| {
        let input = prev(l, plan.buffer.unwrap_or(l.queue_capacity))?;
        if l.ledger.is_some() {
            return Err(BuildError::new(format!(
                "remote region `{}`: resume tracking and the memory budget do not pass through \
                 a remote region yet; turn `track_resume` and `memory_limit` off",
                plan.name
            )));
        }
        let workers = plan.workers;
        let local = workers.local_lanes;
        let lanes_total = local + workers.addrs.len();
        let scope = l.scope(None);
        let ctx = l.stage(plan.name.clone(), StageKind::Pipe, lanes_total, scope);
        let (output, out_rx) = l.queue::<U>(&ctx.name, out_cap);
        let start = RegionStart {
            num_threads: l.default_pool.num_threads(),
            queue_capacity: l.queue_capacity,
            continuous: true,
            // Tickets are the remote tier's unit of exactly once; the ledger does not
            // cross it (resume tracking is refused).
            trace: false,
            outputs: false,
        };
        let runtime = if workers.addrs.is_empty() {
            None
        } else {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("pipeline-remote-client")
                .enable_all()
                .build()
                .map_err(|e| BuildError::new(format!("cannot start the remote runtime: {e}")))?;
            Some(Arc::new(runtime))
        };
        let mut remote = vec![false; local];
        remote.resize(lanes_total, true);
        let mut lane_list = Vec::with_capacity(lanes_total);
        for i in 0..lanes_total {
            let who = (i >= local).then(|| workers.addrs[i - local].clone());
            lane_list.push((who, Arc::new(LaneCounts::default())));
        }
        let lane_counts = lane_list.iter().map(|(_, c)| c.clone()).collect();
        *crate::sync::lock(&workers.books.lanes) = lane_list;
        let schedule = Arc::new(Schedule::new(
            &remote,
            plan.input_order,
            workers.books.counts.clone(),
            lane_counts,
        ));
        {
            let schedule = Arc::downgrade(&schedule);
            l.run.on_stop(Box::new(move || {
                if let Some(schedule) = schedule.upgrade() {
                    schedule.finish();
                }
            }));
        }
        let input = Arc::new(input);
        let spawn = |name: String, body: Box<dyn FnOnce() + Send>| {
            let thread = std::thread::Builder::new()
                .name(name)
                .spawn(body)
                .map_err(|e| {
                    BuildError::new(format!("cannot start a remote region thread: {e}"))
                })?;
            l.run.register_thread(thread);
            Ok::<(), BuildError>(())
        };
        {
            let (schedule, input, ctx) = (schedule.clone(), input.clone(), ctx.clone());
            let size = workers.ticket_size;
            spawn(
                "pipeline-remote-tickets".into(),
                Box::new(move || cut_tickets(&input, &schedule, size, &ctx)),
            )?;
        }
        for lane in 0..lanes_total {
            let schedule = schedule.clone();
            let weak = output.downgrade();
            let deficit = move || weak.upgrade().is_some_and(|tx| tx.len() == 0);
            if lane < local {
                let start = start.clone();
                let key = plan.key;
                spawn(
                    format!("pipeline-remote-local-{lane}"),
                    Box::new(move || lanes::run_local(schedule, lane, key, &start, &deficit)),
                )?;
            } else {
                let peer = Peer {
                    addr: workers.addrs[lane - local].clone(),
                    token: workers.token.clone(),
                    key: plan.key,
                    threads: workers.worker_threads,
                    protocol: workers.protocol,
                    timeout: workers.timeout,
                    give_up: workers.give_up,
                    tls: workers.client_tls(),
                };
                let runtime = runtime.clone().expect("a runtime when there are workers");
                spawn(
                    format!("pipeline-remote-lane-{lane}"),
                    Box::new(move || {
                        lanes::run_remote(schedule, lane, &peer, runtime.handle(), &deficit)
                    }),
                )?;
            }
        }
        ctx.lanes_starting(1);
        let guard = ctx.lane_guard();
        let name = plan.name;
        spawn(
            "pipeline-remote-deliver".into(),
            Box::new(move || {
                deliver(&schedule, &output, &ctx, &input, &name);
                schedule.finish();
                // The stage ends before its output closes.
                drop(guard);
                drop(output);
            }),
        )?;
        Ok(out_rx)
    })
}

/// Cuts the input into tickets: up to `size` inputs, closed early by an epoch boundary or
/// when the input has nothing ready (so a slow source is not held back).
fn cut_tickets<T: Serialize>(input: &Rx<T>, schedule: &Schedule, size: usize, ctx: &StageCtx) {
    let (mut positions, mut items, mut bytes) = (Vec::new(), Vec::new(), 0usize);
    let mut next_position = 0u64;
    let flush = |positions: &mut Vec<u64>, items: &mut Vec<Vec<u8>>, bytes: &mut usize| {
        *bytes = 0;
        items.is_empty() || schedule.add_ticket(std::mem::take(positions), std::mem::take(items))
    };
    loop {
        let msg = match input.try_recv() {
            Some(msg) => msg,
            None => {
                if !flush(&mut positions, &mut items, &mut bytes) {
                    return;
                }
                match block_on_until(input.recv(), Some(Instant::now() + POLL)) {
                    Some(msg) => msg,
                    None if schedule.finished() => return,
                    None => continue,
                }
            }
        };
        match msg {
            Ok(Msg::Item(item, _)) => {
                let position = next_position;
                next_position += 1;
                match encode(&item) {
                    Ok(encoded) if encoded.len() <= MAX_TICKET_BYTES => {
                        bytes += encoded.len();
                        items.push(encoded);
                        positions.push(position);
                    }
                    Ok(encoded) => fail_item(
                        ctx,
                        format!(
                            "an input of {} bytes is larger than a remote region takes ({} bytes)",
                            encoded.len(),
                            MAX_TICKET_BYTES
                        ),
                    ),
                    Err(e) => fail_item(ctx, e.to_string()),
                }
                if (items.len() >= size || bytes >= MAX_TICKET_BYTES)
                    && !flush(&mut positions, &mut items, &mut bytes)
                {
                    return;
                }
            }
            Ok(Msg::EpochEnd) => {
                if !flush(&mut positions, &mut items, &mut bytes) {
                    return;
                }
                schedule.add_boundary();
            }
            Err(_closed) => {
                if flush(&mut positions, &mut items, &mut bytes) {
                    schedule.end_input();
                }
                return;
            }
        }
    }
}

fn fail_item(ctx: &StageCtx, why: String) {
    ctx.on_failure(ItemError::from_error(&ctx.name, why.into()));
}

/// Passes answers downstream until every ticket is delivered, the tier fails, or the
/// pipeline stops.
fn deliver<T, U: DeserializeOwned + Send + 'static>(
    schedule: &Schedule,
    output: &Tx<U>,
    ctx: &StageCtx,
    input: &Rx<T>,
    name: &str,
) {
    loop {
        match schedule.next_delivery() {
            Delivery::Items(lane, items) => {
                for bytes in items {
                    match decode::<U>(&bytes) {
                        Ok(value) => {
                            // The statistics' lanes are the tier's: local ones, then workers.
                            ctx.task_ended(lane, None, TaskOutcome::Succeeded);
                            if output.send_blocking(Msg::Item(value, Tag::NONE)).is_err() {
                                input.close();
                                return;
                            }
                        }
                        Err(e) => {
                            // Not one item's bad luck: a worker built from another program.
                            ctx.fail_stage(StageFailureKind::Start(BuildError::new(format!(
                                "remote region `{name}`: an output did not decode ({e}); are \
                                 the workers built from the same program as the trainer?"
                            ))));
                            input.close();
                            return;
                        }
                    }
                }
            }
            // A closed output (a stop) needs no boundary.
            Delivery::Boundary => drop(output.send_blocking(Msg::EpochEnd)),
            Delivery::End => return,
            Delivery::Failed(why) => {
                ctx.fail_stage(StageFailureKind::Start(BuildError::new(format!(
                    "remote region `{name}`: {why}"
                ))));
                input.close();
                return;
            }
            Delivery::Nothing => {
                if ctx.should_stop() {
                    input.close();
                    return;
                }
            }
        }
    }
}
