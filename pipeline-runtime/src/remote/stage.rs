//! `remote_region`: the builder method and its launch. Three kinds of threads share a
//! [`Schedule`]: one cuts the input into tickets, one per lane works them (local or
//! remote), and one delivers the answers downstream in order.
//!
//! With a ledger (resume tracking, the memory budget, the accounts), each ticket keeps its
//! inputs' tags in the schedule; when its answer is delivered, each output carries a token
//! of the input it names, and each input's own token goes just before its last output is
//! sent (an input with no output counts as filtered). A ticket is delivered once, so its
//! positions are resolved once.

use std::sync::Arc;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::lanes::{self, Peer};
use super::runner::SEVERAL;
use super::schedule::{Answered, Delivery, LaneCounts, Schedule, POLL};
use super::wire::MAX_TICKET_BYTES;
use super::RemoteWorkers;
use crate::block_on::block_on_until;
use crate::builder::{fn_name, PipelineBuilder, StageBuilder};
use crate::failure::{BuildError, ItemError, StageFailureKind};
use crate::hook::TaskOutcome;
use crate::launch::{Launch, LaunchFn};
use crate::process::channel::{decode, encode};
use crate::process::region::RegionStart;
use crate::process::registry::{self, Kind};
use crate::queue::{Msg, Rx, Tx};
use crate::resume::accounts::Outcome;
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
    /// delivers tickets in input order), `buffer`, `name`. Resume tracking passes through
    /// it when each output of the region stands for one input (no batch or one-to-many
    /// stage inside; refused otherwise).
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
        // Each lane and worker builds the region from the registry, by name; here it is
        // only built, to see what resume tracking can follow.
        let untracked = match untracked_inside(&region) {
            Ok(untracked) => untracked,
            Err(e) => {
                errors.push(BuildError::new(format!(
                    "in remote region `{default_name}`: {e}"
                )));
                None
            }
        };
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
                    untracked,
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
    /// Why resume tracking cannot follow the region's outputs, if it cannot.
    untracked: Option<&'static str>,
}

/// Builds the region on an empty source (without running it): what inside it makes an
/// output stand for other than one input (a batch, a one-to-many stage), if anything.
fn untracked_inside<T, U, F>(region: &F) -> Result<Option<&'static str>, BuildError>
where
    T: Send + 'static,
    U: Send + 'static,
    F: Fn(StageBuilder<T>) -> StageBuilder<U>,
{
    let chain = region(PipelineBuilder::new().source(std::iter::empty::<T>()));
    let pipeline = chain.sink().num_threads(1).build()?;
    let words: Vec<&str> = pipeline.shape().split(" -> ").skip(1).collect();
    Ok(if words.iter().any(|w| w.starts_with("aggregate")) {
        Some("a batch made inside it (an output standing for several inputs)")
    } else if words
        .iter()
        .any(|w| w.contains("flat pipe") || w.contains("disaggregate"))
    {
        Some("a one-to-many stage inside it (several outputs per input)")
    } else {
        None
    })
}

fn launch<T, U>(prev: LaunchFn<T>, plan: Plan) -> LaunchFn<U>
where
    T: Serialize + Send + 'static,
    U: DeserializeOwned + Send + 'static,
{
    Box::new(move |l: &mut Launch, out_cap| {
        let input = prev(l, plan.buffer.unwrap_or(l.queue_capacity))?;
        let tracked = l.ledger.as_ref().is_some_and(|l| l.tracks_outputs());
        if let Some(why) = plan.untracked.filter(|_| tracked) {
            return Err(BuildError::new(format!(
                "remote region `{}`: resume tracking follows outputs that each stand for one \
                 input of the region, and this region has {why}; move that stage out of the \
                 region (after it), or turn `track_resume`/`resume_from` off",
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
            // The runner traces (outputs name their inputs) whatever this says.
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

/// The ticket being cut.
#[derive(Default)]
struct Cut {
    positions: Vec<u64>,
    items: Vec<Vec<u8>>,
    tags: Vec<Tag>,
    bytes: usize,
}

/// Cuts the input into tickets: up to `size` inputs, closed early by an epoch boundary or
/// when the input has nothing ready (so a slow source is not held back).
fn cut_tickets<T: Serialize>(input: &Rx<T>, schedule: &Schedule, size: usize, ctx: &StageCtx) {
    let mut cut = Cut::default();
    let mut next_position = 0u64;
    let flush = |cut: &mut Cut| {
        let cut = std::mem::take(cut);
        cut.items.is_empty() || schedule.add_ticket(cut.positions, cut.items, cut.tags)
    };
    loop {
        let msg = match input.try_recv() {
            Some(msg) => msg,
            None => {
                if !flush(&mut cut) {
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
            Ok(Msg::Item(item, tag)) => {
                let position = next_position;
                next_position += 1;
                match encode(&item) {
                    Ok(encoded) if encoded.len() <= MAX_TICKET_BYTES => {
                        cut.bytes += encoded.len();
                        cut.items.push(encoded);
                        cut.positions.push(position);
                        cut.tags.push(tag);
                    }
                    Ok(encoded) => fail_item(
                        ctx,
                        tag,
                        format!(
                            "an input of {} bytes is larger than a remote region takes ({} bytes)",
                            encoded.len(),
                            MAX_TICKET_BYTES
                        ),
                    ),
                    Err(e) => fail_item(ctx, tag, e.to_string()),
                }
                if (cut.items.len() >= size || cut.bytes >= MAX_TICKET_BYTES) && !flush(&mut cut) {
                    return;
                }
            }
            Ok(Msg::EpochEnd) => {
                if !flush(&mut cut) {
                    return;
                }
                schedule.add_boundary();
            }
            Err(_closed) => {
                if flush(&mut cut) {
                    schedule.end_input();
                }
                return;
            }
        }
    }
}

fn fail_item(ctx: &StageCtx, tag: Tag, why: String) {
    ctx.resolve(tag, Outcome::Failed);
    ctx.on_failure(ItemError::from_error(&ctx.name, why.into()));
}

/// The tag of each output of a delivered ticket: a token of the input it names (of every
/// input of the ticket, grouped, for a batch made inside when resume tracking is off).
/// Sets in `last` the index of each input's last output. An output naming no input of its
/// ticket (a worker of another program) is an error.
fn output_tags(
    ctx: &StageCtx,
    answered: &Answered,
    last: &mut [Option<usize>],
) -> Result<Vec<Tag>, String> {
    let Some(ledger) = &ctx.ledger else {
        return Ok(vec![Tag::NONE; answered.items.len()]);
    };
    let inputs = &answered.tags;
    let valid = |&s: &u64| usize::try_from(s).is_ok_and(|s| s < inputs.len());
    if let Some(bad) = answered
        .sources
        .iter()
        .find(|&&s| s != SEVERAL && !valid(&s))
    {
        return Err(format!(
            "an output names input {bad} of a ticket of {} inputs; are the workers built from \
             the same program as the trainer?",
            inputs.len()
        ));
    }
    if answered.sources.len() != answered.items.len() {
        return Err("an answer whose outputs do not each name an input".to_owned());
    }
    let mut out = Vec::with_capacity(answered.sources.len());
    for (j, &source) in answered.sources.iter().enumerate() {
        if source == SEVERAL {
            if ledger.tracks_outputs() {
                return Err(
                    "an output of several inputs (a batch made inside the region), \
                            which resume tracking does not follow through a remote region"
                        .to_owned(),
                );
            }
            for &tag in inputs {
                ledger.add_token(tag);
            }
            last.fill(Some(j));
            out.push(ledger.group(inputs.clone()));
        } else {
            let i = source as usize; // checked above
            ledger.add_token(inputs[i]);
            last[i] = Some(j);
            out.push(inputs[i]);
        }
    }
    Ok(out)
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
            Delivery::Items(answered) => {
                let mut last = vec![None; answered.tags.len()];
                let tags = match output_tags(ctx, &answered, &mut last) {
                    Ok(tags) => tags,
                    Err(why) => {
                        ctx.fail_stage(StageFailureKind::Start(BuildError::new(format!(
                            "remote region `{name}`: {why}"
                        ))));
                        input.close();
                        return;
                    }
                };
                let lane = answered.lane;
                // Each input's own token goes just before its last output is sent (once
                // the consumer has that, the state must not replay the input); an input
                // with no output now, as filtered.
                let mut finishing: Vec<(usize, Tag)> = Vec::new();
                if ctx.ledger.is_some() {
                    for (&tag, last) in answered.tags.iter().zip(&last) {
                        match last {
                            Some(j) => finishing.push((*j, tag)),
                            None => ctx.resolve(tag, Outcome::Filtered),
                        }
                    }
                    finishing.sort_by_key(|&(j, _)| std::cmp::Reverse(j));
                }
                for (j, (bytes, tag)) in answered.items.into_iter().zip(tags).enumerate() {
                    while let Some(&(_, input)) = finishing.last().filter(|(at, _)| *at == j) {
                        ctx.resolve(input, Outcome::Passed);
                        finishing.pop();
                    }
                    match decode::<U>(&bytes) {
                        Ok(value) => {
                            // The statistics' lanes are the tier's: local ones, then workers.
                            ctx.task_ended(lane, None, TaskOutcome::Succeeded);
                            if output.send_blocking(Msg::Item(value, tag)).is_err() {
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
