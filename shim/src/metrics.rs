//! cgroup statistics as containerd's metrics types (`ctr task metrics`).

use crate::cgroup::Stats;
use containerd_shim_protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryOomControl, MemoryStat, Metrics, PidsStat, Throttle,
};
use containerd_shim_protos::protobuf::MessageField;

/// `io.containerd.cgroups.v1.Metrics`, which `ctr` decodes for both cgroup
/// versions' numbers as gathered in [`Stats`].
pub fn v1(s: &Stats) -> Metrics {
    let mut m = Metrics::new();
    let mut pids = PidsStat::new();
    pids.current = s.pids_current;
    pids.limit = s.pids_limit;
    m.pids = MessageField::some(pids);
    let mut usage = CPUUsage::new();
    usage.total = s.cpu_usage_ns;
    usage.user = s.cpu_user_ns;
    usage.kernel = s.cpu_system_ns;
    let mut thr = Throttle::new();
    thr.throttled_periods = s.cpu_throttled_periods;
    thr.throttled_time = s.cpu_throttled_ns;
    let mut cpu = CPUStat::new();
    cpu.usage = MessageField::some(usage);
    cpu.throttling = MessageField::some(thr);
    m.cpu = MessageField::some(cpu);
    let mut mem = MemoryStat::new();
    mem.cache = s.memory_cache;
    mem.rss = s.memory_rss;
    mem.total_cache = s.memory_cache;
    mem.total_rss = s.memory_rss;
    let mut usage = MemoryEntry::new();
    usage.usage = s.memory_usage;
    usage.limit = s.memory_limit;
    usage.max = s.memory_max_usage;
    mem.usage = MessageField::some(usage);
    m.memory = MessageField::some(mem);
    let mut oom = MemoryOomControl::new();
    oom.oom_kill = s.oom_kills;
    m.memory_oom_control = MessageField::some(oom);
    m
}
