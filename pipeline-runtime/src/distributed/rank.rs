//! Who am I: this process's rank in the job, read from the launcher's environment.
//!
//! torchrun sets `RANK`, `WORLD_SIZE`, `LOCAL_RANK` and `LOCAL_WORLD_SIZE`; SLURM's `srun`
//! sets `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID` (and the tasks per node); Open MPI's
//! `mpirun` sets `OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_SIZE`,
//! `OMPI_COMM_WORLD_LOCAL_RANK` and `OMPI_COMM_WORLD_LOCAL_SIZE`. With none of them set the
//! process is a job of one. Two launchers that disagree (e.g. `srun torchrun`, where SLURM
//! counts nodes and torchrun counts workers) are an error unless `PIPELINE_LAUNCHER`
//! (`torchrun`, `slurm` or `mpi`) says which one to read.

use std::fmt;

/// This process's place in a multi-process job. Ranks never talk to each other: each one
/// reads its own share of the data (see [`Sampler`](super::Sampler)).
///
/// [`from_env`](Self::from_env) reads torchrun's `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
/// `LOCAL_WORLD_SIZE`; SLURM's `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID` (and
/// `SLURM_NTASKS_PER_NODE`, or `SLURM_TASKS_PER_NODE` at `SLURM_NODEID`); or Open MPI's
/// `OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_SIZE`, `OMPI_COMM_WORLD_LOCAL_RANK`,
/// `OMPI_COMM_WORLD_LOCAL_SIZE`. With none set, the process is a job of one. Two launchers
/// that disagree are an error unless [`LAUNCHER_VAR`] (`PIPELINE_LAUNCHER`: `torchrun`,
/// `slurm` or `mpi`) says which one to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rank {
    /// This process's rank, in `0..world_size`.
    pub rank: u32,
    /// Processes in the job.
    pub world_size: u32,
    /// This process's rank on its machine, in `0..local_world_size` (the GPU it uses).
    pub local_rank: u32,
    /// Processes of the job on this machine.
    pub local_world_size: u32,
}

/// A malformed or inconsistent rank description; the message quotes the variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankError {
    message: String,
}

impl RankError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// What is wrong, in words.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for RankError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid rank: {}", self.message)
    }
}

impl std::error::Error for RankError {}

/// The variable that picks one launcher when several are set.
pub const LAUNCHER_VAR: &str = "PIPELINE_LAUNCHER";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Launcher {
    Torchrun,
    Slurm,
    OpenMpi,
}

impl Launcher {
    const ALL: [Launcher; 3] = [Launcher::Torchrun, Launcher::Slurm, Launcher::OpenMpi];

    fn name(self) -> &'static str {
        match self {
            Launcher::Torchrun => "torchrun",
            Launcher::Slurm => "slurm",
            Launcher::OpenMpi => "mpi",
        }
    }

    /// (rank, world size, local rank) variables.
    fn vars(self) -> [&'static str; 3] {
        match self {
            Launcher::Torchrun => ["RANK", "WORLD_SIZE", "LOCAL_RANK"],
            Launcher::Slurm => ["SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"],
            Launcher::OpenMpi => [
                "OMPI_COMM_WORLD_RANK",
                "OMPI_COMM_WORLD_SIZE",
                "OMPI_COMM_WORLD_LOCAL_RANK",
            ],
        }
    }
}

impl Rank {
    /// A job of one process.
    pub fn single() -> Self {
        Self {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            local_world_size: 1,
        }
    }

    /// Rank `rank` of `world_size`, all on one machine (local rank = rank).
    pub fn new(rank: u32, world_size: u32) -> Result<Self, RankError> {
        Self::with_local(rank, world_size, rank, world_size)
    }

    /// Rank `rank` of `world_size`, local rank `local_rank` of `local_world_size`.
    pub fn with_local(
        rank: u32,
        world_size: u32,
        local_rank: u32,
        local_world_size: u32,
    ) -> Result<Self, RankError> {
        let rank = Self {
            rank,
            world_size,
            local_rank,
            local_world_size,
        };
        rank.check(["rank", "world size", "local rank", "local world size"])?;
        Ok(rank)
    }

    /// Whether this is a job of one process.
    pub fn is_single(&self) -> bool {
        self.world_size == 1
    }

    /// Reads the rank from this process's environment (see [`Rank`]).
    pub fn from_env() -> Result<Self, RankError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the rank from variables given by `lookup` (`None`: not set), as
    /// [`from_env`](Self::from_env) does from the environment: for tests, or a launcher's
    /// variables kept elsewhere.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, RankError> {
        let chosen = match lookup(LAUNCHER_VAR) {
            None => None,
            Some(name) => Some(
                Launcher::ALL
                    .into_iter()
                    .find(|l| l.name() == name.trim())
                    .ok_or_else(|| {
                        RankError::new(format!(
                            "{LAUNCHER_VAR}={name:?} is none of `torchrun`, `slurm`, `mpi`"
                        ))
                    })?,
            ),
        };
        if let Some(launcher) = chosen {
            return read(launcher, &lookup)?.ok_or_else(|| {
                RankError::new(format!(
                    "{LAUNCHER_VAR}={} but {} is not set",
                    launcher.name(),
                    launcher.vars()[0]
                ))
            });
        }
        let mut found: Option<(Launcher, Rank)> = None;
        for launcher in Launcher::ALL {
            let Some(rank) = read(launcher, &lookup)? else {
                continue;
            };
            match found {
                None => found = Some((launcher, rank)),
                Some((first, seen))
                    if (seen.rank, seen.world_size) != (rank.rank, rank.world_size) =>
                {
                    let [r1, w1, _] = first.vars();
                    let [r2, w2, _] = launcher.vars();
                    return Err(RankError::new(format!(
                        "two launchers disagree: {r1}={} {w1}={} but {r2}={} {w2}={}; set \
                         {LAUNCHER_VAR} to `{}` or `{}` to choose",
                        seen.rank,
                        seen.world_size,
                        rank.rank,
                        rank.world_size,
                        first.name(),
                        launcher.name()
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(found.map_or_else(Rank::single, |(_, rank)| rank))
    }

    fn check(&self, names: [&str; 4]) -> Result<(), RankError> {
        let [rank, world, local, local_world] = names;
        if self.world_size == 0 {
            return Err(RankError::new(format!(
                "{world}={} must be at least 1",
                self.world_size
            )));
        }
        if self.rank >= self.world_size {
            return Err(RankError::new(format!(
                "{rank}={} is not below {world}={}",
                self.rank, self.world_size
            )));
        }
        if self.local_world_size == 0 || self.local_world_size > self.world_size {
            return Err(RankError::new(format!(
                "{local_world}={} must be between 1 and {world}={}",
                self.local_world_size, self.world_size
            )));
        }
        if self.local_rank >= self.local_world_size {
            return Err(RankError::new(format!(
                "{local}={} is not below {local_world}={}",
                self.local_rank, self.local_world_size
            )));
        }
        Ok(())
    }
}

/// This process's local rank (the GPU it should use), 0 outside a multi-process job.
pub fn local_rank() -> Result<u32, RankError> {
    Rank::from_env().map(|r| r.local_rank)
}

/// One launcher's rank: `None` if none of its variables is set.
fn read(
    launcher: Launcher,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<Option<Rank>, RankError> {
    let [rank_var, world_var, local_var] = launcher.vars();
    let local_world_var = match launcher {
        Launcher::Torchrun => "LOCAL_WORLD_SIZE",
        Launcher::Slurm => "SLURM_NTASKS_PER_NODE",
        Launcher::OpenMpi => "OMPI_COMM_WORLD_LOCAL_SIZE",
    };
    let rank = number(lookup, rank_var)?;
    let world = number(lookup, world_var)?;
    let local = number(lookup, local_var)?;
    let (rank, world) = match (rank, world) {
        (None, None) if local.is_none() => return Ok(None),
        (Some(r), Some(w)) => (r, w),
        (None, _) => {
            return Err(RankError::new(format!(
                "{rank_var} is not set but {} is",
                if world.is_some() {
                    world_var
                } else {
                    local_var
                }
            )))
        }
        (Some(_), None) => {
            return Err(RankError::new(format!(
                "{world_var} is not set but {rank_var} is"
            )))
        }
    };
    let mut local_world = number(lookup, local_world_var)?;
    if launcher == Launcher::Slurm && local_world.is_none() {
        local_world = slurm_tasks_on_this_node(lookup)?;
    }
    let (local, local_world) = match (local, local_world) {
        (Some(l), Some(lw)) => (l, lw),
        // Without the local variables: one machine.
        (None, None) => (rank, world),
        (Some(l), None) => (l, world),
        (None, Some(_)) => {
            return Err(RankError::new(format!(
                "{local_var} is not set but {local_world_var} is"
            )))
        }
    };
    let rank = Rank {
        rank,
        world_size: world,
        local_rank: local,
        local_world_size: local_world,
    };
    rank.check([rank_var, world_var, local_var, local_world_var])?;
    Ok(Some(rank))
}

/// A variable holding a number; an error quoting it if it holds anything else.
fn number(lookup: &impl Fn(&str) -> Option<String>, var: &str) -> Result<Option<u32>, RankError> {
    match lookup(var) {
        None => Ok(None),
        Some(value) => {
            value.trim().parse::<u32>().map(Some).map_err(|_| {
                RankError::new(format!("{var}={value:?} is not a non-negative integer"))
            })
        }
    }
}

/// Tasks on this node from `SLURM_TASKS_PER_NODE` (e.g. `4(x2),3`: 4 on each of the first
/// two nodes, 3 on the third), at index `SLURM_NODEID`.
fn slurm_tasks_on_this_node(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<Option<u32>, RankError> {
    let Some(spec) = lookup("SLURM_TASKS_PER_NODE") else {
        return Ok(None);
    };
    let node = number(lookup, "SLURM_NODEID")?.unwrap_or(0);
    let malformed = || RankError::new(format!("SLURM_TASKS_PER_NODE={spec:?} is malformed"));
    let mut seen = 0u32;
    for group in spec.split(',') {
        let (count, repeat) = match group.split_once("(x") {
            Some((count, rest)) => (count, rest.strip_suffix(')').ok_or_else(malformed)?),
            None => (group, "1"),
        };
        let count: u32 = count.trim().parse().map_err(|_| malformed())?;
        let repeat: u32 = repeat.trim().parse().map_err(|_| malformed())?;
        if node < seen + repeat {
            return Ok(Some(count));
        }
        seen += repeat;
    }
    Err(RankError::new(format!(
        "SLURM_NODEID={node} is beyond the nodes of SLURM_TASKS_PER_NODE={spec:?}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn err(vars: &[(&str, &str)]) -> String {
        Rank::from_lookup(env(vars))
            .unwrap_err()
            .message()
            .to_owned()
    }

    #[test]
    fn no_launcher_is_a_job_of_one() {
        assert_eq!(Rank::from_lookup(env(&[])).unwrap(), Rank::single());
    }

    #[test]
    fn each_launcher_is_read() {
        let torchrun = env(&[
            ("RANK", "5"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "4"),
        ]);
        assert_eq!(
            Rank::from_lookup(torchrun).unwrap(),
            Rank::with_local(5, 8, 1, 4).unwrap()
        );
        let slurm = env(&[
            ("SLURM_PROCID", "6"),
            ("SLURM_NTASKS", "7"),
            ("SLURM_LOCALID", "0"),
            ("SLURM_NODEID", "2"),
            ("SLURM_TASKS_PER_NODE", "3(x2),1"),
        ]);
        assert_eq!(
            Rank::from_lookup(slurm).unwrap(),
            Rank::with_local(6, 7, 0, 1).unwrap()
        );
        let mpi = env(&[
            ("OMPI_COMM_WORLD_RANK", "2"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "0"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
        ]);
        assert_eq!(
            Rank::from_lookup(mpi).unwrap(),
            Rank::with_local(2, 4, 0, 2).unwrap()
        );
        let bare = env(&[("RANK", "1"), ("WORLD_SIZE", "2")]);
        assert_eq!(Rank::from_lookup(bare).unwrap(), Rank::new(1, 2).unwrap());
    }

    #[test]
    fn bad_values_are_errors_that_quote_the_variable() {
        let m = err(&[("RANK", "4"), ("WORLD_SIZE", "4")]);
        assert!(m.contains("RANK=4") && m.contains("WORLD_SIZE=4"), "{m}");
        let m = err(&[("RANK", "one"), ("WORLD_SIZE", "4")]);
        assert!(m.contains("RANK=\"one\""), "{m}");
        let m = err(&[("RANK", "-1"), ("WORLD_SIZE", "4")]);
        assert!(m.contains("RANK=\"-1\""), "{m}");
        let m = err(&[("RANK", "0")]);
        assert!(m.contains("WORLD_SIZE is not set"), "{m}");
        let m = err(&[("RANK", "0"), ("WORLD_SIZE", "0")]);
        assert!(m.contains("WORLD_SIZE=0"), "{m}");
        let m = err(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "2"),
            ("LOCAL_WORLD_SIZE", "2"),
        ]);
        assert!(m.contains("LOCAL_RANK=2"), "{m}");
        let m = err(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_TASKS_PER_NODE", "2(x"),
        ]);
        assert!(m.contains("SLURM_TASKS_PER_NODE"), "{m}");
    }

    #[test]
    fn launchers_that_disagree_are_an_error_unless_one_is_chosen() {
        let vars = [
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "2"),
        ];
        let m = err(&vars);
        assert!(m.contains("RANK=3") && m.contains("SLURM_PROCID=1"), "{m}");
        assert!(m.contains(LAUNCHER_VAR), "{m}");
        let mut chosen = vars.to_vec();
        chosen.push((LAUNCHER_VAR, "torchrun"));
        assert_eq!(Rank::from_lookup(env(&chosen)).unwrap().rank, 3);
        chosen.pop();
        chosen.push((LAUNCHER_VAR, "slurm"));
        assert_eq!(Rank::from_lookup(env(&chosen)).unwrap().world_size, 2);
        chosen.pop();
        chosen.push((LAUNCHER_VAR, "pbs"));
        assert!(err(&chosen).contains("pbs"));
        // Launchers that agree are fine.
        let agree = [
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "2"),
        ];
        assert_eq!(Rank::from_lookup(env(&agree)).unwrap().rank, 1);
    }
}
