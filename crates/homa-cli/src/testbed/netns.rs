//! Network namespaces the testbed owns: pid-stamped names, an ownership marker, the
//! teardown guard ([`Namespaces`]), the signal handler that tears down on Ctrl-C, the
//! sweep of stale namespaces of dead runs, and [`in_netns`], which runs code on a thread
//! inside a namespace (sockets it creates live there).
//!
//! Ownership policy:
//! * every name is `homa-tb-<pid>-<role>` ([`PREFIX`], the creating process's pid);
//! * the creating process keeps a marker, `/run/homa-testbed/<pid>`, with its pid, its
//!   start time (field 22 of `/proc/<pid>/stat`, so a reused pid is told apart) and every
//!   name it created; a name is written there before the namespace is created;
//! * a run deletes a namespace only if the marker of the pid in its name lists it: its
//!   own, or a stale one whose owner is dead (no such process, or one with another start
//!   time). A prefixed name without such a marker entry is someone else's: it is
//!   reported and never touched, and a run whose own name is taken stops.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};

use super::error::TestbedError;

/// The prefix of every namespace the testbed creates.
pub(crate) const PREFIX: &str = "homa-tb-";

/// Where `ip netns` keeps its named namespaces.
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// Where the testbed keeps its ownership markers.
pub(crate) const MARKER_DIR: &str = "/run/homa-testbed";

/// The first line of a marker file.
const MARKER_HEADER: &str = "homa testbed namespaces";

/// The name of namespace `role` of the run with process id `pid`.
pub(crate) fn namespace_name(pid: u32, role: &str) -> String {
    format!("{PREFIX}{pid}-{role}")
}

/// The pid and role of a testbed namespace name, if `name` is one.
pub(crate) fn parse_namespace_name(name: &str) -> Option<(u32, &str)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, role) = rest.split_once('-')?;
    if role.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((pid.parse().ok()?, role))
}

/// A process, told apart from a later one with the same pid by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    /// Its process id.
    pub(crate) pid: u32,
    /// Its start time, in clock ticks since boot (`/proc/<pid>/stat`, field 22).
    pub(crate) start_ticks: u64,
}

impl Owner {
    /// This process.
    pub(crate) fn current() -> Result<Owner, TestbedError> {
        let pid = std::process::id();
        let start_ticks = process_start_ticks(pid).ok_or_else(|| {
            TestbedError::io(
                format!("reading the start time of this process from /proc/{pid}/stat"),
                io::Error::from(io::ErrorKind::InvalidData),
            )
        })?;
        Ok(Owner { pid, start_ticks })
    }

    /// Whether this very process (same pid, same start time) still runs.
    pub(crate) fn is_alive(&self) -> bool {
        process_start_ticks(self.pid) == Some(self.start_ticks)
    }
}

/// The start time of process `pid` (field 22 of `/proc/<pid>/stat`), if it exists.
fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_ticks(&stat)
}

/// Field 22 of a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses
/// and may hold spaces and parentheses itself, so fields are counted after the last `)`.
fn parse_start_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first word after the name; field 22 is 19 words later.
    after.split_whitespace().nth(19)?.parse().ok()
}

/// What a marker file says: who created which namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Marker {
    /// The creating process.
    pub(crate) owner: Owner,
    /// The namespaces it created (or was about to create).
    pub(crate) names: Vec<String>,
    /// Its scratch directory (the experiment's logs and raw files), if it made one.
    pub(crate) scratch: Option<PathBuf>,
}

impl Marker {
    /// The marker's file contents.
    pub(crate) fn render(&self) -> String {
        let mut text = format!(
            "{MARKER_HEADER}\npid {}\nstart {}\n",
            self.owner.pid, self.owner.start_ticks
        );
        for name in &self.names {
            text.push_str(&format!("netns {name}\n"));
        }
        if let Some(dir) = &self.scratch {
            text.push_str(&format!("scratch {}\n", dir.display()));
        }
        text
    }

    /// Parses a marker file; `None` if it is not one.
    pub(crate) fn parse(text: &str) -> Option<Marker> {
        let mut lines = text.lines();
        if lines.next()? != MARKER_HEADER {
            return None;
        }
        let pid = lines.next()?.strip_prefix("pid ")?.parse().ok()?;
        let start_ticks = lines.next()?.strip_prefix("start ")?.parse().ok()?;
        let mut names = Vec::new();
        let mut scratch = None;
        for line in lines {
            match line.strip_prefix("scratch ") {
                Some(dir) => scratch = Some(PathBuf::from(dir)),
                None => names.push(line.strip_prefix("netns ")?.to_string()),
            }
        }
        Some(Marker {
            owner: Owner { pid, start_ticks },
            names,
            scratch,
        })
    }
}

fn marker_path(pid: u32) -> PathBuf {
    Path::new(MARKER_DIR).join(pid.to_string())
}

fn read_marker(pid: u32) -> Option<Marker> {
    Marker::parse(&fs::read_to_string(marker_path(pid)).ok()?)
}

/// What a run does with a prefixed namespace it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// Created by a testbed run that is gone: delete it.
    Stale,
    /// Created by a testbed run that still runs: leave it.
    Running,
    /// Not provably created by a testbed run: never touch it.
    Foreign,
}

/// Decides about namespace `name`, given the marker of the pid in its name (if any) and
/// whether that marker's owner still runs.
pub(crate) fn classify(name: &str, marker: Option<&Marker>, owner_alive: bool) -> Disposition {
    let Some((pid, _)) = parse_namespace_name(name) else {
        return Disposition::Foreign;
    };
    match marker {
        Some(m) if m.owner.pid == pid && m.names.iter().any(|n| n == name) => {
            if owner_alive {
                Disposition::Running
            } else {
                Disposition::Stale
            }
        }
        _ => Disposition::Foreign,
    }
}

/// What [`sweep_stale`] found.
#[derive(Debug, Default)]
pub(crate) struct Sweep {
    /// Stale namespaces of dead runs, deleted.
    pub(crate) removed: Vec<String>,
    /// Namespaces of testbed runs still running, left alone.
    pub(crate) running: Vec<String>,
    /// Prefixed namespaces without a marker entry, left alone.
    pub(crate) foreign: Vec<String>,
}

/// The names in [`NETNS_DIR`] that start with [`PREFIX`].
pub(crate) fn prefixed_namespaces() -> Result<Vec<String>, TestbedError> {
    let entries = match fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TestbedError::io(format!("listing {NETNS_DIR}"), e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(PREFIX))
        .collect();
    names.sort();
    Ok(names)
}

/// Deletes the namespaces of testbed runs that died without tearing down (and their
/// markers); reports those of live runs and foreign ones, which it leaves alone.
pub(crate) fn sweep_stale() -> Result<Sweep, TestbedError> {
    let mut sweep = Sweep::default();
    for name in prefixed_namespaces()? {
        let marker = parse_namespace_name(&name).and_then(|(pid, _)| read_marker(pid));
        let alive = marker.as_ref().is_some_and(|m| m.owner.is_alive());
        match classify(&name, marker.as_ref(), alive) {
            Disposition::Stale => {
                delete_namespace(&name)?;
                sweep.removed.push(name);
            }
            Disposition::Running => sweep.running.push(name),
            Disposition::Foreign => sweep.foreign.push(name),
        }
    }
    // Markers of dead runs whose namespaces are all gone.
    if let Ok(entries) = fs::read_dir(MARKER_DIR) {
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            let Some(marker) = fs::read_to_string(&path)
                .ok()
                .and_then(|t| Marker::parse(&t))
            else {
                continue;
            };
            let left = marker
                .names
                .iter()
                .any(|n| Path::new(NETNS_DIR).join(n).exists());
            if !marker.owner.is_alive() && !left {
                if let Some(dir) = marker.scratch.as_deref().filter(|d| is_scratch(d)) {
                    let _ = fs::remove_dir_all(dir);
                }
                let _ = fs::remove_file(&path);
            }
        }
    }
    Ok(sweep)
}

/// The prefix of a run's scratch directory's name (`$TMPDIR/homa-testbed-<pid>`).
pub(crate) const SCRATCH_PREFIX: &str = "homa-testbed-";

/// Whether `dir` is named as a run's scratch directory: a sweep removes nothing else,
/// whatever a marker file says.
fn is_scratch(dir: &Path) -> bool {
    dir.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
        .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Deletes namespace `name` (`ip netns del`); one that is already gone is fine.
fn delete_namespace(name: &str) -> Result<(), TestbedError> {
    if !Path::new(NETNS_DIR).join(name).exists() {
        return Ok(());
    }
    run_checked(Command::new("ip").args(["netns", "del", name])).map(|_| ())
}

/// The state the guard and the signal handler share.
#[derive(Debug)]
struct Owned {
    marker: Marker,
    marker_path: PathBuf,
    /// Set once torn down: nothing more is created.
    closed: bool,
    /// Child processes running in the namespaces (each the leader of its own process
    /// group, not yet reaped): killed before the namespaces are deleted.
    children: Vec<u32>,
}

impl Owned {
    fn write_marker(&self) -> Result<(), TestbedError> {
        let tmp = self.marker_path.with_extension("tmp");
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(self.marker.render().as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &self.marker_path)
        };
        write().map_err(|e| TestbedError::io(format!("writing {}", self.marker_path.display()), e))
    }

    /// Deletes every namespace still listed, newest first, then the marker; returns what
    /// failed (those stay listed, for a later call or a later run's sweep). Nothing can be
    /// created afterwards.
    fn teardown(&mut self) -> Vec<TestbedError> {
        self.closed = true;
        // Processes first: they would outlive their namespaces' names otherwise. Their
        // owners reap them (or the process exits).
        for pid in std::mem::take(&mut self.children) {
            kill_group(pid);
        }
        let mut errors = Vec::new();
        if let Some(dir) = self.marker.scratch.take() {
            if let Err(e) = fs::remove_dir_all(&dir) {
                if e.kind() != io::ErrorKind::NotFound {
                    errors.push(TestbedError::io(format!("removing {}", dir.display()), e));
                }
            }
        }
        if self.marker.names.is_empty() && !self.marker_path.exists() {
            return errors;
        }
        let mut kept = Vec::new();
        for name in self.marker.names.iter().rev() {
            if let Err(e) = delete_namespace(name) {
                errors.push(e);
                kept.push(name.clone());
            }
        }
        kept.reverse();
        self.marker.names = kept;
        if self.marker.names.is_empty() {
            if let Err(e) = fs::remove_file(&self.marker_path) {
                if e.kind() != io::ErrorKind::NotFound {
                    errors.push(TestbedError::io(
                        format!("removing {}", self.marker_path.display()),
                        e,
                    ));
                }
            }
        } else if let Err(e) = self.write_marker() {
            // Keep the marker listing what is left, so a later run can sweep it.
            errors.push(e);
        }
        errors
    }
}

/// The guard of the namespaces a run created: dropping it (normal end, error, panic)
/// deletes them; [`Namespaces::install_signal_handler`] makes Ctrl-C, SIGTERM and SIGHUP
/// delete them too before the process exits.
#[derive(Debug)]
pub(crate) struct Namespaces {
    owned: Arc<Mutex<Owned>>,
}

impl Namespaces {
    /// A guard owning nothing yet; writes this process's marker.
    pub(crate) fn new() -> Result<Namespaces, TestbedError> {
        let owner = Owner::current()?;
        fs::create_dir_all(MARKER_DIR)
            .map_err(|e| TestbedError::io(format!("creating {MARKER_DIR}"), e))?;
        let owned = Owned {
            marker: Marker {
                owner,
                names: Vec::new(),
                scratch: None,
            },
            marker_path: marker_path(owner.pid),
            closed: false,
            children: Vec::new(),
        };
        owned.write_marker()?;
        Ok(Namespaces {
            owned: Arc::new(Mutex::new(owned)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Owned> {
        // A panic while holding the lock leaves consistent data (names are pushed after
        // the marker is written): keep using it.
        self.owned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates namespace `homa-tb-<pid>-<role>` and returns its name. Refuses if the
    /// name exists already (it cannot be ours: this process has not created it).
    pub(crate) fn create(&self, role: &str) -> Result<String, TestbedError> {
        let mut owned = self.lock();
        if owned.closed {
            return Err(TestbedError::Interrupted);
        }
        let name = namespace_name(owned.marker.owner.pid, role);
        if Path::new(NETNS_DIR).join(&name).exists() || owned.marker.names.contains(&name) {
            return Err(TestbedError::NamespaceExists { name });
        }
        // Written down before it exists, so that no namespace of ours is ever unlisted.
        owned.marker.names.push(name.clone());
        owned.write_marker()?;
        if let Err(e) = run_checked(Command::new("ip").args(["netns", "add", &name])) {
            owned.marker.names.pop();
            let _ = owned.write_marker();
            return Err(e);
        }
        Ok(name)
    }

    /// The namespaces this guard owns (created and not yet deleted), oldest first.
    pub(crate) fn names(&self) -> Vec<String> {
        self.lock().marker.names.clone()
    }

    /// A handle that spawns child processes the teardown (and the signal thread) kills.
    pub(crate) fn children(&self) -> Children {
        Children {
            owned: Arc::clone(&self.owned),
        }
    }

    /// Creates the run's scratch directory `dir` (empty; an old one of the same name is
    /// removed first), removed again by the teardown.
    pub(crate) fn create_scratch(&self, dir: &Path) -> Result<(), TestbedError> {
        let mut owned = self.lock();
        if owned.closed {
            return Err(TestbedError::Interrupted);
        }
        match fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(TestbedError::io(format!("removing {}", dir.display()), e)),
        }
        fs::create_dir_all(dir)
            .map_err(|e| TestbedError::io(format!("creating {}", dir.display()), e))?;
        owned.marker.scratch = Some(dir.to_path_buf());
        owned.write_marker()
    }

    /// Deletes every namespace created (and the marker). Returns the failures; after it
    /// the guard owns nothing and its drop does nothing.
    pub(crate) fn teardown(&self) -> Vec<TestbedError> {
        self.lock().teardown()
    }

    /// Starts a thread that, on SIGINT, SIGTERM or SIGHUP, tears these namespaces down
    /// and exits the process with 128 + the signal number.
    pub(crate) fn install_signal_handler(&self) -> Result<(), TestbedError> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
            .map_err(|e| TestbedError::io("installing the signal handler", e))?;
        let owned = Arc::clone(&self.owned);
        std::thread::Builder::new()
            .name("testbed-signals".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    let mut owned = owned.lock().unwrap_or_else(|p| p.into_inner());
                    let count = owned.marker.names.len();
                    let errors = owned.teardown();
                    let mut err = io::stderr().lock();
                    let _ = writeln!(
                        err,
                        "homa testbed: signal {signal}: removed {} of the {count} namespaces left",
                        count - errors.len().min(count)
                    );
                    for e in &errors {
                        let _ = writeln!(err, "homa testbed: teardown: {e}");
                    }
                    std::process::exit(128 + signal);
                }
            })
            .map_err(|e| TestbedError::io("starting the signal thread", e))?;
        Ok(())
    }
}

/// Spawns child processes registered with the guard: the teardown kills them (their whole
/// process group, with SIGKILL) before it deletes the namespaces, also on a signal. The
/// owner of a [`Child`] must end it with [`Children::kill`], which forgets it before it
/// is reaped, so that a pid is never signalled after it may have been reused.
#[derive(Debug, Clone)]
pub(crate) struct Children {
    owned: Arc<Mutex<Owned>>,
}

impl Children {
    fn lock(&self) -> MutexGuard<'_, Owned> {
        self.owned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spawns `command` in a process group of its own (a Ctrl-C at the terminal reaches
    /// only `homa`, whose signal thread kills it), killed with SIGKILL if this thread
    /// ends first (`PR_SET_PDEATHSIG`: also when `homa` itself is SIGKILLed), and
    /// registers it; all under the guard's lock, so that a teardown either comes first
    /// (and nothing is spawned: [`TestbedError::Interrupted`]) or kills it.
    pub(crate) fn spawn(&self, command: &mut Command) -> Result<Child, TestbedError> {
        let mut owned = self.lock();
        if owned.closed {
            return Err(TestbedError::Interrupted);
        }
        let parent = std::process::id();
        command.process_group(0);
        // SAFETY: the closure runs in the forked child before exec and calls only
        // async-signal-safe functions (prctl, getppid) without allocating: the error is
        // built from a raw OS error code.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent died before the prctl: nobody would kill this child.
                if libc::getppid() as u32 != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| TestbedError::io(format!("starting `{}`", command_line(command)), e))?;
        owned.children.push(child.id());
        Ok(child)
    }

    /// Kills `child`'s process group (if still registered: a teardown may have killed it
    /// already), forgets it, then reaps it.
    pub(crate) fn kill(&self, child: &mut Child) -> Result<std::process::ExitStatus, TestbedError> {
        let pid = child.id();
        {
            let mut owned = self.lock();
            if let Some(i) = owned.children.iter().position(|&p| p == pid) {
                owned.children.swap_remove(i);
                kill_group(pid);
            }
        }
        child
            .wait()
            .map_err(|e| TestbedError::io(format!("reaping child process {pid}"), e))
    }

    /// Reaps `child` if it has exited (forgetting it first, under the lock, so that the
    /// teardown never signals a reaped pid); `None` while it runs.
    pub(crate) fn try_reap(
        &self,
        child: &mut Child,
    ) -> Result<Option<std::process::ExitStatus>, TestbedError> {
        let pid = child.id();
        let mut owned = self.lock();
        // waitid(WNOWAIT) would peek without reaping; try_wait reaps, so forget first and
        // put it back if it still runs.
        let registered = owned.children.iter().position(|&p| p == pid);
        if let Some(i) = registered {
            owned.children.swap_remove(i);
        }
        match child.try_wait() {
            Ok(Some(status)) => Ok(Some(status)),
            Ok(None) => {
                if registered.is_some() {
                    owned.children.push(pid);
                }
                Ok(None)
            }
            Err(e) => {
                if registered.is_some() {
                    owned.children.push(pid);
                }
                Err(TestbedError::io(
                    format!("waiting for child process {pid}"),
                    e,
                ))
            }
        }
    }
}

/// Sends SIGKILL to process group `pgid` (a child spawned by [`Children::spawn`], not yet
/// reaped); an error (it is gone already) is ignored.
fn kill_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    // SAFETY: kill(2) takes two integers and touches no memory of ours; the group's
    // leader is an unreaped child of this process, so the number names it.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for e in self.teardown() {
            eprintln!("homa testbed: teardown: {e}");
        }
    }
}

/// The command line of `command`, for messages.
pub(crate) fn command_line(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `command`, returns its stdout; an error names the command, its status and its
/// stderr. Like every command the testbed runs, it gets a process group of its own: a
/// Ctrl-C at the terminal reaches only `homa`, whose signal thread tears down, and never
/// kills an `ip netns del` half-way through the teardown.
pub(crate) fn run_checked(command: &mut Command) -> Result<String, TestbedError> {
    let output = command
        .process_group(0)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TestbedError::io(format!("running `{}`", command_line(command)), e))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(TestbedError::Command {
            command: command_line(command),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// Runs `program -n NETNS -batch -` (`ip` or `tc`) with `lines` on its stdin.
pub(crate) fn run_batch(program: &str, netns: &str, lines: &[String]) -> Result<(), TestbedError> {
    let mut command = Command::new(program);
    command.args(["-n", netns, "-batch", "-"]);
    let what = format!("{} <<< {} lines", command_line(&command), lines.len());
    let mut child = command
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| TestbedError::io(format!("running `{what}`"), e))?;
    let mut input = lines.join("\n");
    input.push('\n');
    if let Some(mut stdin) = child.stdin.take() {
        // A write error means the program exited early; its status says why.
        let _ = stdin.write_all(input.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|e| TestbedError::io(format!("waiting for `{what}`"), e))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    // `Command failed -:N` names the line that failed.
    let failed_line = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Command failed -:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .and_then(|n| lines.get(n.wrapping_sub(1)));
    Err(TestbedError::Command {
        command: match failed_line {
            Some(line) => format!("{program} -n {netns}: {line}"),
            None => what,
        },
        status: output.status.to_string(),
        stderr,
    })
}

/// Runs `f` on a new thread that has entered network namespace `netns`, and returns its
/// result. Sockets `f` creates belong to that namespace for good, wherever they are used
/// afterwards; the thread itself ends with `f`.
pub(crate) fn in_netns<T: Send>(
    netns: &str,
    f: impl FnOnce() -> Result<T, TestbedError> + Send,
) -> Result<T, TestbedError> {
    let path = Path::new(NETNS_DIR).join(netns);
    let file = File::open(&path)
        .map_err(|e| TestbedError::io(format!("opening {}", path.display()), e))?;
    std::thread::scope(|scope| {
        let thread = scope.spawn(move || {
            enter_netns(&file).map_err(|e| {
                TestbedError::io(format!("entering network namespace {netns} (setns)"), e)
            })?;
            f()
        });
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Moves the calling thread into the network namespace `file` refers to.
fn enter_netns(file: &File) -> io::Result<()> {
    // SAFETY: setns(2) takes a descriptor and a flag; `file` keeps the descriptor open for
    // the whole call, and the call changes only the calling thread's network namespace
    // (allowed in a multithreaded process for CLONE_NEWNET); it touches no memory of ours.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Writes `value` to `/proc/sys/<key>` inside namespace `netns` (per-namespace sysctls
/// such as `net/ipv4/ip_forward`).
pub(crate) fn set_sysctl(netns: &str, key: &str, value: &str) -> Result<(), TestbedError> {
    let path = format!("/proc/sys/{key}");
    in_netns(netns, || {
        fs::write(&path, value)
            .map_err(|e| TestbedError::io(format!("writing {value} to {path} in {netns}"), e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(pid: u32, names: &[&str]) -> Marker {
        Marker {
            owner: Owner {
                pid,
                start_ticks: 777,
            },
            names: names.iter().map(|n| n.to_string()).collect(),
            scratch: None,
        }
    }

    #[test]
    fn names_carry_prefix_pid_and_role() {
        assert_eq!(namespace_name(4321, "sw"), "homa-tb-4321-sw");
        assert_eq!(
            parse_namespace_name("homa-tb-4321-h15"),
            Some((4321, "h15"))
        );
        assert_eq!(parse_namespace_name("homa-tb-4321-"), None);
        assert_eq!(parse_namespace_name("homa-tb--sw"), None);
        assert_eq!(parse_namespace_name("homa-tb-12x-sw"), None);
        assert_eq!(parse_namespace_name("homa-tb-+12-sw"), None);
        assert_eq!(parse_namespace_name("other-4321-sw"), None);
        assert_eq!(parse_namespace_name("homa-tb-99999999999-sw"), None);
    }

    #[test]
    fn marker_round_trips_and_rejects_other_files() {
        let m = marker(12, &["homa-tb-12-sw", "homa-tb-12-h0"]);
        assert_eq!(Marker::parse(&m.render()), Some(m.clone()));
        let with_scratch = Marker {
            scratch: Some(PathBuf::from("/tmp/homa-testbed-12")),
            ..m.clone()
        };
        assert_eq!(
            Marker::parse(&with_scratch.render()),
            Some(with_scratch.clone())
        );
        // Only directories named as scratch directories are ever swept.
        assert!(is_scratch(Path::new("/tmp/homa-testbed-12")));
        assert!(!is_scratch(Path::new("/tmp/homa-testbed-")));
        assert!(!is_scratch(Path::new("/home")));
        assert!(!is_scratch(Path::new("/tmp/homa-testbed-12x")));
        assert_eq!(Marker::parse(""), None);
        assert_eq!(Marker::parse("something else\npid 12\nstart 1\n"), None);
        assert_eq!(
            Marker::parse("homa testbed namespaces\npid 12\nstart 1\nbogus\n"),
            None
        );
        assert_eq!(
            Marker::parse("homa testbed namespaces\npid x\nstart 1\n"),
            None
        );
    }

    #[test]
    fn only_listed_names_of_dead_owners_are_stale() {
        let m = marker(12, &["homa-tb-12-sw", "homa-tb-12-h0"]);
        assert_eq!(
            classify("homa-tb-12-sw", Some(&m), false),
            Disposition::Stale
        );
        assert_eq!(
            classify("homa-tb-12-h0", Some(&m), true),
            Disposition::Running
        );
        // Prefixed but not listed: someone else's.
        assert_eq!(
            classify("homa-tb-12-h1", Some(&m), false),
            Disposition::Foreign
        );
        // No marker at all.
        assert_eq!(classify("homa-tb-12-sw", None, false), Disposition::Foreign);
        // A marker of another pid never vouches for a name.
        let other = marker(13, &["homa-tb-12-sw"]);
        assert_eq!(
            classify("homa-tb-12-sw", Some(&other), false),
            Disposition::Foreign
        );
        // Not even our name format.
        assert_eq!(
            classify("homa-tb-sw", Some(&m), false),
            Disposition::Foreign
        );
    }

    #[test]
    fn start_time_is_field_22_even_with_odd_command_names() {
        let fields: String = (3..=52).map(|i| format!(" {i}")).collect();
        let stat = format!("77 (a) b) c){fields}");
        assert_eq!(parse_start_ticks(&stat), Some(22));
        assert_eq!(parse_start_ticks("77 (x) R 1 2"), None);
        assert_eq!(parse_start_ticks("no parenthesis"), None);
        // This process is alive, and a different start time is not.
        let me = Owner::current().unwrap();
        assert!(me.is_alive());
        assert!(!Owner {
            start_ticks: me.start_ticks + 1,
            ..me
        }
        .is_alive());
    }

    /// Teardown of namespaces that are already gone (no `ip` runs, no root needed):
    /// the list empties, the marker goes, a second teardown does nothing, and nothing
    /// can be created afterwards.
    #[test]
    fn teardown_forgets_what_is_gone_removes_the_marker_and_closes() {
        let dir = std::env::temp_dir().join(format!("homa-tb-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let owned = Owned {
            marker: Marker {
                scratch: Some(dir.join("scratch")),
                ..marker(
                    std::process::id(),
                    &["homa-tb-4999998-gone0", "homa-tb-4999998-gone1"],
                )
            },
            marker_path: dir.join("marker"),
            closed: false,
            children: Vec::new(),
        };
        owned.write_marker().unwrap();
        fs::create_dir_all(dir.join("scratch/sub")).unwrap();
        let written = fs::read_to_string(&owned.marker_path).unwrap();
        assert_eq!(Marker::parse(&written), Some(owned.marker.clone()));
        let guard = Namespaces {
            owned: Arc::new(Mutex::new(owned)),
        };
        assert_eq!(guard.names().len(), 2);
        let errors = guard.teardown();
        assert!(errors.is_empty(), "{errors:?}");
        assert!(guard.names().is_empty());
        assert!(!dir.join("marker").exists());
        assert!(
            !dir.join("scratch").exists(),
            "the scratch directory goes too"
        );
        assert!(guard.teardown().is_empty());
        assert!(matches!(guard.create("sw"), Err(TestbedError::Interrupted)));
        drop(guard);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn command_lines_are_quoted_as_run() {
        let mut c = Command::new("tc");
        c.args(["-n", "ns", "qdisc", "show"]);
        assert_eq!(command_line(&c), "tc -n ns qdisc show");
    }

    #[test]
    fn a_failed_command_reports_status_and_stderr() {
        let e = run_checked(Command::new("sh").args(["-c", "echo oops >&2; exit 3"])).unwrap_err();
        match e {
            TestbedError::Command { status, stderr, .. } => {
                assert!(status.contains('3'), "{status}");
                assert_eq!(stderr, "oops");
            }
            other => panic!("unexpected {other}"),
        }
        let e = run_checked(&mut Command::new("/nonexistent/homa-tool")).unwrap_err();
        assert!(matches!(e, TestbedError::Io { .. }), "{e}");
    }
}
