"""Signals: SIGTERM/SIGINT stop (a second one exits at once), SIGHUP reloads the configuration.

A reload re-reads the file, keeps the old configuration if the new one is invalid (and says
why), applies what can change live and restarts only the stages whose other settings changed.
"""

from __future__ import annotations

import asyncio
import os
import signal

from dahell import config as config_mod
from dahell import log as log_mod
from dahell.errors import ConfigError
from dahell.supervisor.runtime import StageRuntime, SupervisorBase


class SignalsAndReload(SupervisorBase):
    """The signal handlers, and the reload SIGHUP (or a caller) asks for."""

    _signals: int

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals > 1:
            self.log.warning("shutdown_forced", signal=sig.name)
            os._exit(128 + sig.value)
        self.log.info("signal_received", signal=sig.name)
        self.request_stop(0, sig.name)

    def _on_reload_signal(self) -> None:
        self.log.info("signal_received", signal="SIGHUP")
        self.reload()

    def reload(self) -> bool:
        """Re-read the configuration; apply it if valid. Returns whether it was applied."""
        self.notifier.reloading()
        try:
            new = config_mod.load(self.config_path)
        except ConfigError as exc:
            self.log.error("config_reload_failed", error=str(exc), kept="previous configuration")
            self.notifier.ready()
            return False
        changed = _changed_keys(self.config, new)
        live = sorted(k for k in changed if k in config_mod.LIVE_KEYS)
        needs_restart = sorted({k.split(".")[0] for k in changed if k not in config_mod.LIVE_KEYS})
        old, self.config = self.config, new
        log_mod.set_secrets(new.secrets())
        if new.log.level != old.log.level:
            log_mod.set_level(new.log.level)
        restarted = [n for n in self.runtimes if n in needs_restart]
        process_level = [s for s in needs_restart if s not in self.runtimes]
        for name in restarted:
            self._restart_for_config(self.runtimes[name])
        self.log.info(
            "config_reloaded",
            changed=sorted(changed),
            applied_live=live,
            restarted_stages=restarted,
            needs_process_restart=process_level,
        )
        self.notifier.ready()
        return True

    def _restart_for_config(self, rt: StageRuntime) -> None:
        if rt.task is not None and not rt.task.done():
            rt.reconfigured = True
            rt.task.cancel()
        rt.wake.set()  # parked or backing off: try again now


def _changed_keys(old: config_mod.Config, new: config_mod.Config) -> set[str]:
    a, b = old.model_dump(exclude={"source"}), new.model_dump(exclude={"source"})
    return {
        f"{section}.{key}"
        for section in a
        for key in a[section]
        if a[section][key] != b[section][key]
    }
