//! The unix-specific part of running a job: process groups and signals.
//! Everything that sends a signal or reaps a process lives here.

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// Who a `runAs` job runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    /// Supplementary groups, set in the child before exec.
    pub groups: Vec<nix::unistd::Gid>,
}

/// The identity of `user` on this worker, if the worker can switch to it:
/// the user must exist here, and the worker must be root (or already be
/// that user). The error names the user and the worker.
pub fn switch_user(user: &str, worker: &str) -> Result<Identity, String> {
    let found = nix::unistd::User::from_name(user)
        .map_err(|e| format!("runAs: cannot look up user '{user}' on worker {worker}: {e}"))?
        .ok_or_else(|| format!("runAs: user '{user}' does not exist on worker {worker}"))?;
    let me = nix::unistd::geteuid();
    if !me.is_root() && me != found.uid {
        return Err(format!(
            "runAs: worker {worker} runs as uid {me} and cannot switch to user '{user}' (it must run as root)"
        ));
    }
    let name =
        std::ffi::CString::new(user).map_err(|_| format!("runAs: bad user name '{user}'"))?;
    let groups = if me.is_root() {
        nix::unistd::getgrouplist(&name, found.gid)
            .map_err(|e| format!("runAs: groups of '{user}': {e}"))?
    } else {
        Vec::new()
    };
    Ok(Identity {
        uid: found.uid.as_raw(),
        gid: found.gid.as_raw(),
        home: found.dir.display().to_string(),
        groups,
    })
}

/// Switch the child to `identity` right before exec: supplementary groups,
/// then group, then user (std's `uid()` would run before our hook and leave
/// the user's own supplementary groups out).
pub fn become_on_exec(command: &mut tokio::process::Command, identity: Identity) {
    use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};
    let Identity {
        uid, gid, groups, ..
    } = identity;
    // SAFETY: three system calls on memory allocated before the fork; they
    // allocate nothing and take no lock in the child.
    unsafe {
        command.pre_exec(move || {
            if !groups.is_empty() {
                setgroups(&groups)?;
            }
            setgid(Gid::from_raw(gid))?;
            setuid(Uid::from_raw(uid))?;
            Ok(())
        });
    }
}

/// Make this process the reaper of its orphaned descendants, so the
/// grandchildren of a job are reaped here even where PID 1 does not reap.
pub fn become_subreaper() {
    if let Err(error) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(%error, "cannot become a child subreaper; orphaned job processes are left to PID 1");
    }
}

/// Raise this process's soft open-file limit to its hard limit.
pub fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let raised = getrlimit(Resource::RLIMIT_NOFILE).and_then(|(soft, hard)| {
        if soft < hard {
            setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
        } else {
            Ok(())
        }
    });
    if let Err(error) = raised {
        tracing::warn!(%error, "cannot raise the open-file limit");
    }
}

/// Whether any process is left in the group (zombies included).
pub fn group_alive(pgid: i32) -> bool {
    !matches!(killpg(Pid::from_raw(pgid), None), Err(Errno::ESRCH))
}

fn signal_group(pgid: i32, signal: Signal) {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(error) => tracing::warn!(pgid, %signal, %error, "cannot signal process group"),
    }
}

/// Reap every exited process of the group that became our child (orphans,
/// through the subreaper). Call only after the group leader was reaped.
pub fn reap_group(pgid: i32) {
    loop {
        match waitpid(Pid::from_raw(-pgid), Some(WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

/// End a whole process group: SIGTERM, then SIGKILL to whatever is left
/// after `grace`. Returns once nothing of the group is alive, reaping the
/// orphans that were reparented to us. The leader must already be waited
/// for by its owner (tokio), or be waited concurrently.
pub async fn terminate_group(pgid: i32, grace: Duration) {
    if !group_alive(pgid) {
        return;
    }
    signal_group(pgid, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        reap_group_members_except_leader(pgid);
        if !group_alive(pgid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal_group(pgid, Signal::SIGKILL);
    // After SIGKILL, processes go within milliseconds; zombies wait for a reaper.
    for _ in 0..250 {
        reap_group_members_except_leader(pgid);
        if !group_alive(pgid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::warn!(pgid, "processes of a killed group are still present");
}

/// Reap exited orphans of the group without stealing the leader's status
/// (the leader's pid equals the pgid; tokio waits for it).
fn reap_group_members_except_leader(pgid: i32) {
    // Peek at each exited child of the group; reap it unless it is the leader.
    loop {
        let flags = WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT | WaitPidFlag::WEXITED;
        let id = nix::sys::wait::Id::PGid(Pid::from_raw(pgid));
        match nix::sys::wait::waitid(id, flags) {
            Ok(status) => match status.pid() {
                Some(pid) if pid.as_raw() != pgid => {
                    let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
                }
                _ => return,
            },
            Err(_) => return,
        }
    }
}

/// Kills a run's process group if the run is abandoned: its task dropped
/// before the run ended (the worker's runtime shutting down, a test ending).
/// Disarmed once the run has ended its group itself.
pub struct GroupGuard(pub i32);

impl GroupGuard {
    pub fn disarm(&mut self) {
        self.0 = 0;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.0 > 0 {
            let _ = killpg(Pid::from_raw(self.0), Signal::SIGKILL);
        }
    }
}
