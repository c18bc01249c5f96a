"""Per host: does the kernel keep hypervisor steal out of a thread's CPU time?

The split of a stall into in-guest preemption (delta run_delay) and steal (the rest) holds only
where the kernel subtracts steal from the clock that charges tasks: with
CONFIG_PARAVIRT_TIME_ACCOUNTING, kernel/sched/core.c update_rq_clock_task() takes the paravirt
steal clock's advance out of rq->clock_task (when the paravirt_steal_rq_enabled key is on, as
on KVM with steal time), and a task's sum_exec_runtime and CLOCK_THREAD_CPUTIME_ID advance
with clock_task; run_delay (kernel/sched/stats.h sched_info_arrive) advances with rq->clock,
so a runnable task's wait includes steal. Without that option the stolen time is charged to
whatever ran: the split is "unknown" and the conditional figures that need it are withheld.

    accounting(config_text)  -> "paravirt" | "unknown"           (pure)
    await host_accounting(host) -> {"accounting", "source", "irq_time"}

The config is read from /boot/config-$(uname -r), else /proc/config.gz; the text read back is
only searched for two option names, never run.
"""

from __future__ import annotations

import re

PARAVIRT = "paravirt"
UNKNOWN = "unknown"
ROLES = ("client", "server")

_READ = ('f=/boot/config-$(uname -r); if [ -r "$f" ]; then echo "source $f"; grep -E '
         '"^(# )?CONFIG_(PARAVIRT_TIME_ACCOUNTING|IRQ_TIME_ACCOUNTING)[= ]" "$f"; '
         'elif [ -r /proc/config.gz ]; then echo "source /proc/config.gz"; zcat /proc/config.gz | grep -E '
         '"^(# )?CONFIG_(PARAVIRT_TIME_ACCOUNTING|IRQ_TIME_ACCOUNTING)[= ]"; else echo "source none"; fi')


def option(config_text: str, name: str) -> bool:
    return re.search(rf"^CONFIG_{name}=y\s*$", config_text or "", re.M) is not None


def accounting(config_text: str) -> str:
    """"paravirt" when the kernel's config has PARAVIRT_TIME_ACCOUNTING=y, else "unknown"."""
    return PARAVIRT if option(config_text, "PARAVIRT_TIME_ACCOUNTING") else UNKNOWN


def parse_probe(text: str) -> dict:
    """host_accounting's answer from the shell snippet's output (pure)."""
    m = re.search(r"^source (\S+)$", text or "", re.M)
    src = m.group(1) if m and m.group(1) != "none" else None
    if src is None:
        return {"accounting": UNKNOWN, "source": None, "irq_time": None,
                "reason": "no kernel config readable (/boot/config-$(uname -r), /proc/config.gz)"}
    acc = accounting(text)
    return {"accounting": acc, "source": src, "irq_time": option(text, "IRQ_TIME_ACCOUNTING"),
            "reason": None if acc == PARAVIRT else f"CONFIG_PARAVIRT_TIME_ACCOUNTING is not set ({src})"}


async def host_accounting(host) -> dict:
    """The host's steal accounting (read only; any failure is "unknown" with the reason)."""
    try:
        res = await host.run(["sh", "-c", _READ], check=False, timeout=10)
    except Exception as exc:  # noqa: BLE001 - an unreadable config is "unknown", never an error
        return {"accounting": UNKNOWN, "source": None, "irq_time": None, "reason": f"could not read the config: {exc}"}
    return parse_probe(res.stdout)


def per_role(client: dict | None, server: dict | None) -> dict[str, dict]:
    """{"client": ..., "server": ...}; a role whose host was not checked is "unknown"."""
    none = {"accounting": UNKNOWN, "source": None, "irq_time": None, "reason": "not checked"}
    return {"client": client or none, "server": server or none}
