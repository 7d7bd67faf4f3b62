"""Deliver one alert to every configured channel: one after the other, each within the channel
timeout, a failing channel never stopping the others, and a result per channel.

:func:`adeliver` is awaited where an event loop runs (deadline callbacks in the triggerer);
:func:`deliver` is the same for synchronous callers.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Sequence

from mlops_provider.notifications.alerts import Alert
from mlops_provider.notifications.channels import (
    ChannelError,
    build_channel,
    hold_url_loggers_at_info,
)

log = logging.getLogger(__name__)

SENT = "sent"


async def adeliver(alert: Alert, channels: Sequence[str] | None = None) -> dict[str, str]:
    """Send ``alert`` once on each channel, each within ``MLOPS_ALERT_TIMEOUT_S``; a failing
    channel is logged and the others still run. Never raises: an alert must not fail the task
    (or approval, or deadline callback) that raised it.

    Channels go one after the other: in a task process, one channel's async connection read in
    flight makes another's synchronous read fail (Airflow's supervisor channel refuses it).

    :return: channel -> ``"sent"`` or ``"failed: <reason>"``.
    """
    from mlops_steps.core.settings import ConfigError, get_settings

    results: dict[str, str] = {}
    try:
        settings = get_settings()
        names = list(channels) if channels is not None else list(settings.alerts.channels)
    except ConfigError as err:
        log.error("alert %s (%s) not sent: %s", alert.alert_id, alert.title, err)
        return {"config": f"failed: {err}"}
    hold_url_loggers_at_info()
    timeout = settings.alerts.timeout_s
    for name in names:
        try:
            channel = build_channel(name, settings)  # imports its provider, outside the timer
            await asyncio.wait_for(channel.send(alert), timeout)
        except TimeoutError:
            results[name] = (
                f"failed: {name}: no answer within {timeout:g} s (MLOPS_ALERT_TIMEOUT_S)"
            )
        except ChannelError as err:
            results[name] = f"failed: {err}"
        except Exception as err:  # a bug or an odd library error: keep the other channels going
            # Library errors can embed a URL or a password: the type and the frames, no message.
            frames = "".join(traceback.format_tb(err.__traceback__))
            results[name] = f"failed: unexpected {type(err).__name__} at\n{frames}"
        else:
            results[name] = SENT
            continue
        log.error("alert %s: channel %r failed: %s", alert.alert_id, name, results[name])
    log.info("alert %s (%s): %s", alert.alert_id, alert.title, results)
    return results


def deliver(alert: Alert, channels: Sequence[str] | None = None) -> dict[str, str]:
    """:func:`adeliver` for synchronous callers: task failure callbacks and approval notifiers,
    which run in a task process without an event loop."""
    return asyncio.run(adeliver(alert, channels))
