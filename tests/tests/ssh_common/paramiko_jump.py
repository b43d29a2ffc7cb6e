"""paramiko (the SSH client of Fabric and Ansible's paramiko transport)
against the jump host, for tests/tests/ssh_totp.rs. Prints one JSON line.

  paramiko_jump.py login HOST PORT USER KEY CODE TARGET_HOST TARGET_PORT
      the key, then keyboard-interactive answered with CODE, then a
      direct-tcpip channel to TARGET (its first line: the target's banner)
  paramiko_jump.py burst HOST PORT USER KEY CODE COUNT
      COUNT connections at once, each: the key, then keyboard-interactive
      answered once with CODE; what each connection got (a burst of
      guesses must not get more codes judged than the lockout allows)
  paramiko_jump.py bogus-service HOST PORT
      a service request the server does not offer: how, and how fast, the
      server answers (it must say so, never stay silent)

Every wait is bounded: connection, banner and authentication 10 s each
(a burst's connections 60 s each, as they wait their turn).
"""
import json
import sys
import threading
import time

import paramiko

LIMIT = 10


def transport(host, port, limit=LIMIT):
    t = paramiko.Transport((host, int(port)))
    t.banner_timeout = limit
    t.auth_timeout = limit
    t.start_client(timeout=limit)
    return t


def login(host, port, user, key_file, code, target_host, target_port):
    result = {}
    t = transport(host, port)
    key = paramiko.PKey.from_path(key_file)
    try:
        result["publickey"] = t.auth_publickey(user, key)
    except paramiko.AuthenticationException as err:
        result["publickey_error"] = str(err)
    prompts = []

    def answer(title, instructions, asked):
        prompts.extend(p for p, _ in asked)
        return [code for _ in asked]

    started = time.monotonic()
    try:
        result["interactive"] = t.auth_interactive(user, answer)
    except Exception as err:  # what paramiko raises is the finding
        result["interactive_error"] = f"{type(err).__name__}: {err}"
    result["interactive_seconds"] = round(time.monotonic() - started, 2)
    result["prompts"] = prompts
    result["authenticated"] = t.is_authenticated()
    if t.is_authenticated():
        channel = t.open_channel(
            "direct-tcpip", (target_host, int(target_port)), ("127.0.0.1", 0), timeout=LIMIT
        )
        channel.settimeout(LIMIT)
        result["banner"] = channel.recv(256).decode(errors="replace").splitlines()[0]
        channel.close()
    t.close()
    return result


BURST_LIMIT = 60


def one_guess(host, port, user, key, code, outcomes, index, ready):
    started = time.monotonic()
    outcome = {"index": index}
    try:
        t = transport(host, port, BURST_LIMIT)
        try:
            t.auth_publickey(user, key)
        except paramiko.AuthenticationException:
            pass
        asked = []

        def answer(title, instructions, prompts):
            asked.extend(p for p, _ in prompts)
            # Every connection answers its prompt at the same moment (one
            # that failed before its prompt breaks the barrier: go anyway).
            try:
                ready.wait(BURST_LIMIT / 4)
            except threading.BrokenBarrierError:
                pass
            return [code for _ in prompts]

        try:
            t.auth_interactive(user, answer)
            outcome["result"] = "authenticated"
        except paramiko.AuthenticationException as err:
            outcome["result"] = "refused"
            outcome["error"] = str(err)
        outcome["prompted"] = len(asked)
        t.close()
    except Exception as err:  # a connection refused or cut: what it was
        outcome["result"] = "error"
        outcome["error"] = f"{type(err).__name__}: {err}"
    outcome["seconds"] = round(time.monotonic() - started, 2)
    outcomes[index] = outcome


def burst(host, port, user, key_file, code, count):
    key = paramiko.PKey.from_path(key_file)
    outcomes = [None] * int(count)
    ready = threading.Barrier(int(count))
    threads = [
        threading.Thread(target=one_guess, args=(host, port, user, key, code, outcomes, i, ready))
        for i in range(int(count))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BURST_LIMIT * 2)
    return {"outcomes": outcomes}


def bogus_service(host, port):
    t = transport(host, port)
    message = paramiko.Message()
    message.add_byte(bytes([5]))  # SSH_MSG_SERVICE_REQUEST
    message.add_string("gatehouse-no-such-service")
    started = time.monotonic()
    t._send_message(message)
    while t.is_active() and time.monotonic() - started < LIMIT:
        time.sleep(0.02)
    result = {
        "closed": not t.is_active(),
        "seconds": round(time.monotonic() - started, 2),
    }
    t.close()
    return result


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "login":
        out = login(*args)
    elif command == "burst":
        out = burst(*args)
    else:
        out = bogus_service(*args)
    print(json.dumps(out), flush=True)
