# Shell helpers the bench scripts share (sourced after they cd to the repo root).

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# port -> 0 once something accepts on it, within 10 s
wait_port() {
  local i
  for i in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# pid -> utime+stime in clock ticks
cpu_ticks() {
  # fields after the command name, which may hold spaces or parentheses
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
