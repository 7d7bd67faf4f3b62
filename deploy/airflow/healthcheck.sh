#!/usr/bin/env bash
# HEALTHCHECK of the Airflow image (Dockerfile). One image runs every component, so the check is
# the one for the component this container was started as, read from PID 1's command line: the
# API server answers its health route; the scheduler, triggerer and DAG processor have a live job
# heartbeat from this host. Anything else (a task, `airflow db migrate`) is a one-off command whose
# exit code is its result: healthy while it runs. Kubernetes ignores HEALTHCHECK (the Helm chart
# probes each component itself); this is for Docker and Compose.
set -euo pipefail

cmdline=" $(tr '\0' ' ' <"${AIRFLOW_HEALTHCHECK_CMDLINE:-/proc/1/cmdline}") "
case "$cmdline" in
  *" api-server "*)
    exec curl --fail --silent --show-error --max-time 10 --output /dev/null \
      "http://127.0.0.1:${AIRFLOW__API__PORT:-8080}/api/v2/monitor/health" ;;
  *" scheduler "*) exec airflow jobs check --job-type SchedulerJob --local ;;
  *" triggerer "*) exec airflow jobs check --job-type TriggererJob --local ;;
  *" dag-processor "*) exec airflow jobs check --job-type DagProcessorJob --local ;;
  *) exit 0 ;;
esac
