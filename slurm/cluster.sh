#!/usr/bin/env bash
# Local single-node SLURM cluster (munge + MariaDB + slurmdbd + slurmctld +
# slurmd) on localhost, for CI integration tests. Debian 12 / SLURM 22.05,
# run as root, no systemd: every daemon is started directly and stopped by PID.
#
#   slurm/cluster.sh up       install missing packages, configure, start, wait
#                             until the node is idle and sacct answers (idempotent)
#   slurm/cluster.sh down     cancel all jobs, stop every daemon by PID, kill any
#                             leftover job process of this cluster
#   slurm/cluster.sh status   daemons, sinfo, squeue; exit 0 only if all are up
#   slurm/cluster.sh env      print the export line for client commands
#
# All state (configs, logs, pid files, spool, state save, MariaDB data) lives in
# $LFS_SLURM_DIR (default /tmp/lfs-slurm); logs are in $LFS_SLURM_DIR/log.
# Client commands find the config through /etc/slurm/slurm.conf (a symlink made
# by `up` when that path is free or already ours) or SLURM_CONF.
set -euo pipefail

DIR=$(realpath -m "${LFS_SLURM_DIR:-/tmp/lfs-slurm}")
CLUSTER=${LFS_SLURM_CLUSTER:-lfs}
CTLD_PORT=${LFS_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${LFS_SLURM_SLURMD_PORT:-6818}
DBD_PORT=${LFS_SLURM_DBD_PORT:-6819}
DB_PORT=${LFS_SLURM_DB_PORT:-6820}
GRACE=${LFS_SLURM_GRACE:-10}            # GraceTime of the preemptable `low` partition
CRED_EXPIRE=${LFS_SLURM_CRED_EXPIRE:-30} # requeued jobs wait CRED_EXPIRE+1 s (SLURM default 120)
TIMEOUT=${LFS_SLURM_TIMEOUT:-60}        # seconds to wait for each daemon

PKGS="munge slurmctld slurmd slurm-client slurmdbd mariadb-server"
ETC=$DIR/etc LOG=$DIR/log RUN=$DIR/run STATE=$DIR/state MUNGE=$DIR/munge DB=$DIR/mysql
CONF=$ETC/slurm.conf
SOCK=$MUNGE/munge.socket.2
SYS_CONF=/etc/slurm/slurm.conf
START=$(date +%s)

export SLURM_CONF=$CONF
# Marker put in the environment of every daemon we start (never exported to
# the caller); slurmstepd inherits it from slurmd, which lets `down` find
# leftover slurmstepd/job processes of this cluster by PID.
MARK="LFS_SLURM_CLUSTER_DIR=$DIR"

die() {  # die MESSAGE [LOGFILE]: one line on stderr, with the log's last error
  local last=""
  [[ -n ${2:-} && -f $2 ]] && last=$(grep -iE 'fatal|error' "$2" | grep -v pmix | tail -1 | cut -c1-200 || true)
  echo "cluster.sh: ERROR: $1${last:+ (last log error: $last)}${2:+; see $2}" >&2
  exit 1
}
say() { echo "cluster.sh: $*"; }

# pid file and expected /proc/PID/comm of each daemon
pidfile() {
  case $1 in
    munged) echo "$MUNGE/munged.pid" ;;
    mariadbd) echo "$DB/mariadbd.pid" ;;
    *) echo "$RUN/$1.pid" ;;
  esac
}
pid_of() {  # prints the PID if the daemon is alive
  local f pid
  f=$(pidfile "$1")
  pid=$(cat "$f" 2>/dev/null || true)
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
    && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] && ! is_zombie "$pid" && echo "$pid"
}
is_zombie() { local st; st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1; [[ $st == Z ]]; }
alive() { [[ -n $(pid_of "$1") ]]; }

wait_for() {  # wait_for SECONDS DESCRIPTION LOGFILE DAEMON CMD...
  local secs=$1 what=$2 log=$3 daemon=$4; shift 4
  local end=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    if [[ -n $daemon ]] && ! alive "$daemon"; then
      sleep 1; alive "$daemon" || die "$daemon exited during startup" "$log"
    fi
    (( $(date +%s) < end )) || die "timed out after ${secs}s waiting for $what" "$log"
    sleep 0.5
  done
}

# ---------------------------------------------------------------- install
install_packages() {
  local missing="" p
  for p in $PKGS; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || missing+=" $p"
  done
  [[ -z $missing ]] && return 0
  say "installing$missing (apt-get, log $LOG/apt.log)"
  # Keep the packages' maintainer scripts from starting system-wide daemons.
  local made_policy=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local rc=0
  # shellcheck disable=SC2086  # $missing is a list
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing; } \
    >>"$LOG/apt.log" 2>&1 || rc=$?
  [[ -n $made_policy ]] && rm -f /usr/sbin/policy-rc.d
  (( rc == 0 )) || die "apt-get install of$missing failed" "$LOG/apt.log"
}

# ---------------------------------------------------------------- configure
write_if_changed() {  # write_if_changed FILE MODE < content
  local tmp; tmp=$(mktemp "$1.XXXXXX")
  cat >"$tmp"; chmod "$2" "$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv -f "$tmp" "$1"; fi
}

configure() {
  local host node_line mem
  host=$(hostname -s)
  node_line=$(slurmd -C | head -1)                   # NodeName=vm CPUs=2 ... RealMemory=24105
  [[ $node_line == NodeName=* ]] || die "slurmd -C gave no node line: $node_line"
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
  node_line=$(sed -e "s/^NodeName=[^ ]*/NodeName=$host NodeAddr=127.0.0.1/" \
                  -e "s/RealMemory=[0-9]*/RealMemory=$(( mem * 9 / 10 ))/" <<<"$node_line")

  write_if_changed "$CONF" 644 <<EOF
# Generated by slurm/cluster.sh for host $host; do not edit.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK,cred_expire=$CRED_EXPIRE
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
# Schedule every 5 s (default 60/30 s) so a job whose StartTime was moved starts promptly.
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
DefMemPerCPU=1024
KillWait=5
MinJobAge=600
InactiveLimit=0
# Preemption: a job in \`high\` requeues jobs in \`low\`; the job's --signal is
# sent at preemption (preempt_send_user_signal), SIGTERM follows after GraceTime.
JobRequeue=1
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
# Accounting through slurmdbd so sacct works.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$SOCK
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
$node_line State=UNKNOWN
PartitionName=low Nodes=$host Default=YES PriorityTier=1 PreemptMode=REQUEUE GraceTime=$GRACE MaxTime=INFINITE OverSubscribe=NO State=UP
PartitionName=high Nodes=$host Default=NO PriorityTier=10 PreemptMode=OFF MaxTime=INFINITE OverSubscribe=NO State=UP
EOF

  write_if_changed "$ETC/slurmdbd.conf" 600 <<EOF
# Generated by slurm/cluster.sh; do not edit.
AuthType=auth/munge
AuthInfo=socket=$SOCK
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
DebugLevel=info
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=lfs-slurm
StorageLoc=slurm_acct_db
EOF

  write_if_changed "$ETC/my.cnf" 644 <<EOF
# Generated by slurm/cluster.sh; do not edit.
[mysqld]
user=mysql
datadir=$DB/data
socket=$DB/mysqld.sock
pid-file=$DB/mariadbd.pid
log-error=$LOG/mariadb.log
port=$DB_PORT
bind-address=127.0.0.1
skip-name-resolve
innodb_buffer_pool_size=512M
innodb_log_file_size=64M
innodb_lock_wait_timeout=900
[client]
socket=$DB/mysqld.sock
EOF

  # Let plain `sinfo`/`sbatch` (and submitit) find the config: link
  # /etc/slurm/slurm.conf here unless it is a real file or a live link to
  # another cluster's config (then clients need SLURM_CONF).
  if [[ ! -e $SYS_CONF ]] || [[ $(readlink "$SYS_CONF") == "$CONF" ]]; then
    mkdir -p /etc/slurm
    ln -sfn "$CONF" "$SYS_CONF"
  else
    say "note: $SYS_CONF is not ours; clients need: export SLURM_CONF=$CONF"
  fi
}

make_dirs() {
  mkdir -p "$ETC" "$LOG" "$RUN" "$STATE/slurmctld" "$STATE/slurmd" "$MUNGE" "$DB"
  chmod 755 "$DIR" "$ETC" "$LOG" "$RUN"
  chown munge:munge "$MUNGE"; chmod 755 "$MUNGE"       # munged refuses other modes
  touch "$LOG/munged.log"; chown munge:munge "$LOG/munged.log"; chmod 640 "$LOG/munged.log"
  chown mysql:mysql "$DB"; chmod 750 "$DB"
  touch "$LOG/mariadb.log"; chown mysql:mysql "$LOG/mariadb.log"
  local u
  for u in munge mysql; do   # e.g. a directory under /root (mode 700) is not reachable
    setpriv --reuid=$u --regid=$u --clear-groups -- test -x "$DIR" \
      || die "user $u cannot reach $DIR (a parent directory is not world-executable); pick another LFS_SLURM_DIR"
  done
}

# ---------------------------------------------------------------- start
start_munged() {
  if [[ ! -s $MUNGE/munge.key ]]; then
    mungekey --create --keyfile="$MUNGE/munge.key" >>"$LOG/munged.log" 2>&1 \
      || dd if=/dev/urandom of="$MUNGE/munge.key" bs=1024 count=1 status=none
  fi
  chown munge:munge "$MUNGE/munge.key"; chmod 600 "$MUNGE/munge.key"
  if ! alive munged; then
    rm -f "$SOCK" "$SOCK.lock"
    env "$MARK" setpriv --reuid=munge --regid=munge --init-groups -- \
      munged --socket="$SOCK" --key-file="$MUNGE/munge.key" --pid-file="$MUNGE/munged.pid" \
             --log-file="$LOG/munged.log" --seed-file="$MUNGE/munged.seed" --num-threads=2 \
      </dev/null >>"$LOG/munged.log" 2>&1 || die "munged failed to start" "$LOG/munged.log"
  fi
  wait_for "$TIMEOUT" "munge" "$LOG/munged.log" munged \
    bash -c "munge -n -S '$SOCK' | unmunge -S '$SOCK'"
}

start_mariadb() {
  if [[ ! -d $DB/data/mysql ]]; then
    mariadb-install-db --defaults-file="$ETC/my.cnf" --skip-test-db \
      --auth-root-authentication-method=socket --auth-root-socket-user=root \
      >>"$LOG/mariadb-install.log" 2>&1 || die "mariadb-install-db failed" "$LOG/mariadb-install.log"
  fi
  if ! alive mariadbd; then
    env "$MARK" setsid mariadbd --defaults-file="$ETC/my.cnf" </dev/null >>"$LOG/mariadb.log" 2>&1 &
  fi
  wait_for "$TIMEOUT" "MariaDB" "$LOG/mariadb.log" "" \
    mariadb-admin --defaults-file="$ETC/my.cnf" -uroot ping
  alive mariadbd || die "mariadbd is not running" "$LOG/mariadb.log"
  mariadb --defaults-file="$ETC/my.cnf" -uroot >>"$LOG/mariadb-install.log" 2>&1 <<'SQL' \
    || die "creating the slurm database user failed" "$LOG/mariadb-install.log"
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'lfs-slurm';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'lfs-slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL
}

start_slurmdbd() {
  alive slurmdbd || env "$MARK" slurmdbd </dev/null >>"$LOG/slurmdbd.log" 2>&1 \
    || die "slurmdbd failed to start" "$LOG/slurmdbd.log"
  wait_for "$TIMEOUT" "slurmdbd" "$LOG/slurmdbd.log" slurmdbd sacctmgr -n list cluster
  if [[ -z $(sacctmgr -n -P list cluster format=cluster where cluster="$CLUSTER" 2>/dev/null) ]]; then
    sacctmgr -i add cluster "$CLUSTER" >>"$LOG/slurmdbd.log" 2>&1 \
      || die "sacctmgr add cluster $CLUSTER failed" "$LOG/slurmdbd.log"
  fi
}

start_slurmctld() {
  local fresh="" jobs=()
  if ! alive slurmctld; then
    env "$MARK" slurmctld -f "$CONF" </dev/null >>"$LOG/slurmctld.log" 2>&1 \
      || die "slurmctld failed to start" "$LOG/slurmctld.log"
    fresh=1
  fi
  wait_for "$TIMEOUT" "slurmctld" "$LOG/slurmctld.log" slurmctld \
    bash -c "scontrol ping | grep -q UP"
  if [[ -n $fresh ]]; then   # jobs recovered from a run that was not brought down cleanly
    mapfile -t jobs < <(squeue -h -o %i 2>/dev/null)
    if (( ${#jobs[@]} )); then
      say "cancelling jobs left from an earlier run: ${jobs[*]}"
      scancel "${jobs[@]}" 2>/dev/null || true
    fi
  fi
}

node_state() { sinfo -h -n "$(hostname -s)" -o %T 2>/dev/null | head -1; }

start_slurmd() {
  alive slurmd || env "$MARK" slurmd -f "$CONF" </dev/null >>"$LOG/slurmd.log" 2>&1 \
    || die "slurmd failed to start" "$LOG/slurmd.log"
  local end=$(( $(date +%s) + TIMEOUT )) st resumed=""
  while :; do
    st=$(node_state)
    case $st in
      idle|mixed|allocated) break ;;
      down*|drain*|fail*)
        if [[ -z $resumed ]] && alive slurmd; then   # stale reason from an earlier run
          scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
          resumed=1
        fi ;;
    esac
    alive slurmd || die "slurmd exited (node state '$st')" "$LOG/slurmd.log"
    (( $(date +%s) < end )) || die "node not idle after ${TIMEOUT}s (state '$st')" "$LOG/slurmd.log"
    sleep 0.5
  done
}

cmd_up() {
  [[ $(id -u) == 0 ]] || die "must run as root"
  mkdir -p "$LOG"
  install_packages
  make_dirs
  configure
  if ! alive slurmctld && ! alive slurmd; then   # after a crash: no job may survive
    local stale=()
    mapfile -t stale < <(cluster_pids jobs)
    if (( ${#stale[@]} )); then
      say "stopping job processes left from an earlier run: ${stale[*]}"
      stop_pids 2 "${stale[@]}"
    fi
  fi
  start_munged
  start_mariadb
  start_slurmdbd
  start_slurmctld
  start_slurmd
  wait_for "$TIMEOUT" "sacct" "$LOG/slurmdbd.log" "" sacct -n -X -a -S now-1hour
  say "up in $(( $(date +%s) - START ))s: node $(hostname -s) $(node_state), partitions low (default) and high; logs in $LOG; SLURM_CONF=$CONF"
}

# ---------------------------------------------------------------- stop
# PIDs of this cluster's processes: those carrying our marker (daemons,
# slurmstepd), job processes (SLURM_JOB_ID set and SLURM_CONF ours, which
# catches tasks orphaned by a dead slurmstepd), and all their descendants.
# This script and its ancestors are never included. `cluster_pids jobs`:
# only slurmstepd and job processes (not the daemons).
cluster_pids() {
  local p seeds=() all="" mine=" " envs=() ppid pid changed=1
  p=$$; while [[ $p -gt 1 ]]; do mine+="$p "; p=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null) || break; done
  mine+="$BASHPID "
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [[ $mine == *" $p "* ]] && continue
    mapfile -d '' -t envs 2>/dev/null <"/proc/$p/environ" || continue
    local e mark=0 job=0 conf=0
    for e in "${envs[@]}"; do
      case $e in
        "$MARK") mark=1 ;;
        SLURM_JOB_ID=*) job=1 ;;
        "SLURM_CONF=$CONF") conf=1 ;;
      esac
    done
    if [[ ${1:-} == jobs ]] && (( mark )); then
      [[ $(cat "/proc/$p/comm" 2>/dev/null) == slurmstepd ]] || mark=0
    fi
    (( mark || (job && conf) )) && seeds+=("$p")
  done
  (( ${#seeds[@]} )) || return 0
  all=" ${seeds[*]} "
  while (( changed )); do   # add descendants, by walking the parent links
    changed=0
    while read -r pid ppid; do
      if [[ $all == *" $ppid "* && $all != *" $pid "* && $mine != *" $pid "* ]]; then
        all+="$pid "; changed=1
      fi
    done < <(ps -e -o pid=,ppid=)
  done
  for pid in $all; do echo "$pid"; done
}

any_alive() { local pid; for pid in "$@"; do kill -0 "$pid" 2>/dev/null && return 0; done; return 1; }

stop_pids() {  # stop_pids SECONDS PID...: SIGTERM, wait up to SECONDS, then SIGKILL
  local secs=$1 n=0; shift
  (( $# )) || return 0
  kill -TERM "$@" 2>/dev/null || true
  while any_alive "$@" && (( n++ < secs * 4 )); do sleep 0.25; done
  if any_alive "$@"; then
    say "sending SIGKILL to $* (still running ${secs}s after SIGTERM)"
    kill -KILL "$@" 2>/dev/null || true
    n=0; while any_alive "$@" && (( n++ < 20 )); do sleep 0.25; done
  fi
}

stop_daemons() {  # stop_daemons NAME...: stopped together, by PID
  local d pid pids=()
  for d in "$@"; do
    pid=$(pid_of "$d") || true
    if [[ -n $pid ]]; then say "stopping $d ($pid)"; pids+=("$pid"); fi
  done
  stop_pids 15 "${pids[@]}"
  for d in "$@"; do alive "$d" || rm -f "$(pidfile "$d")"; done
}

cmd_down() {
  local jobs=() left=() n=0
  if alive slurmctld; then
    mapfile -t jobs < <(squeue -h -o %i 2>/dev/null)
    if (( ${#jobs[@]} )); then
      say "cancelling jobs: ${jobs[*]}"
      scancel "${jobs[@]}" 2>/dev/null || true
      scancel --full --signal=KILL "${jobs[@]}" 2>/dev/null || true   # don't wait out KillWait
      while [[ -n $(squeue -h -o %i -t running,completing,suspended 2>/dev/null) ]] && (( n++ < 40 )); do
        sleep 0.5
      done
    fi
  fi
  stop_daemons slurmd slurmctld slurmdbd
  stop_daemons mariadbd munged
  # leftover slurmstepd / job processes of this cluster (e.g. after slurmd died)
  mapfile -t left < <(cluster_pids)
  if (( ${#left[@]} )); then
    say "stopping leftover cluster processes: ${left[*]}"
    stop_pids 2 "${left[@]}"
    mapfile -t left < <(cluster_pids)
    (( ${#left[@]} == 0 )) || die "processes still running after down: ${left[*]}"
  fi
  if [[ $(readlink "$SYS_CONF" 2>/dev/null) == "$CONF" ]]; then rm -f "$SYS_CONF"; fi
  say "down (state and logs kept in $DIR)"
}

cmd_status() {
  local d pid ok=0
  for d in munged mariadbd slurmdbd slurmctld slurmd; do
    pid=$(pid_of "$d") || true
    if [[ -n $pid ]]; then printf '%-10s running (pid %s)\n' "$d" "$pid"
    else printf '%-10s not running\n' "$d"; ok=1; fi
  done
  if alive slurmctld; then sinfo || true; squeue || true; fi
  echo "SLURM_CONF=$CONF  logs: $LOG"
  return $ok
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 up|down|status|env   (state in \$LFS_SLURM_DIR, default /tmp/lfs-slurm)" >&2; exit 2 ;;
esac
