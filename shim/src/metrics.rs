//! cgroup statistics as containerd's metrics types (`ctr task metrics`):
//! `io.containerd.cgroups.v1.Metrics` on a v1 host, `.v2.Metrics` on v2.

use crate::cgroup::Stats;
use containerd_shim_protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryOomControl, MemoryStat, Metrics, PidsStat, Throttle,
};
use containerd_shim_protos::protobuf::MessageField;

/// `io.containerd.cgroups.v1.Metrics`.
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

/// `io.containerd.cgroups.v2.Metrics` (times in microseconds, as the v2
/// files give them).
pub fn v2(s: &Stats) -> containerd_shim_protos::cgroups_v2::metrics::Metrics {
    use containerd_shim_protos::cgroups_v2::metrics as m2;
    let mut m = m2::Metrics::new();
    let mut pids = m2::PidsStat::new();
    pids.current = s.pids_current;
    pids.limit = s.pids_limit;
    m.pids = MessageField::some(pids);
    let mut cpu = m2::CPUStat::new();
    cpu.usage_usec = s.cpu_usage_ns / 1000;
    cpu.user_usec = s.cpu_user_ns / 1000;
    cpu.system_usec = s.cpu_system_ns / 1000;
    cpu.nr_throttled = s.cpu_throttled_periods;
    cpu.throttled_usec = s.cpu_throttled_ns / 1000;
    m.cpu = MessageField::some(cpu);
    let mut mem = m2::MemoryStat::new();
    mem.usage = s.memory_usage;
    mem.usage_limit = s.memory_limit;
    mem.max_usage = s.memory_max_usage;
    mem.file = s.memory_cache;
    mem.anon = s.memory_rss;
    m.memory = MessageField::some(mem);
    let mut events = m2::MemoryEvents::new();
    events.oom_kill = s.oom_kills;
    m.memory_events = MessageField::some(events);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::Message;

    #[test]
    fn v2_metrics_round_trip() {
        let s = Stats {
            memory_usage: 5 << 20,
            memory_limit: 64 << 20,
            cpu_usage_ns: 3_000_000,
            pids_current: 4,
            pids_limit: 10,
            oom_kills: 2,
            ..Default::default()
        };
        let bytes = v2(&s).write_to_bytes().expect("encode");
        let m = containerd_shim_protos::cgroups_v2::metrics::Metrics::parse_from_bytes(&bytes)
            .expect("decode");
        assert_eq!(m.memory.usage, 5 << 20);
        assert_eq!(m.memory.usage_limit, 64 << 20);
        assert_eq!(m.cpu.usage_usec, 3000);
        assert_eq!((m.pids.current, m.pids.limit), (4, 10));
        assert_eq!(m.memory_events.oom_kill, 2);
    }
}
