using System.Diagnostics;
using System.Net.Sockets;
using Microsandbox.Protocol;

namespace Microsandbox.Runtime;

/// <summary>
/// Owns one sandbox's VMM and its single agent channel, and shares that channel among any number
/// of engine clients by giving each client session its own agent session.
/// </summary>
internal sealed class Supervisor : IDisposable
{
    private const int ConsoleTailLines = 40;
    private static readonly TimeSpan DefaultStopTimeout = TimeSpan.FromSeconds(10);
    private readonly RuntimeSpec _spec;
    private readonly DateTimeOffset _startedAt = DateTimeOffset.UtcNow;
    private readonly TaskCompletionSource<HelloMessage> _ready =
        new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _stopRequested = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Dictionary<uint, Route> _routes = [];
    private readonly object _gate = new();
    private readonly object _commandLogGate = new();
    private Process? _vmm;
    private FrameWriter? _agent;
    private uint _nextAgentSession = 1;
    private TimeSpan _stopTimeout = DefaultStopTimeout;
    private string? _stopReason;
    private ErrorMessage? _bootError;
    private long? _bootMilliseconds;
    private int _clients;
    private long _lastActivity = Environment.TickCount64;

    public Supervisor(RuntimeSpec spec) => _spec = spec;

    /// <summary>Starts the VMM. Call on the main thread: the VMM's parent-death signal follows the forking thread.</summary>
    public void StartVmm()
    {
        WriteStatus("Starting");
        Log($"starting {_spec.VmmPath} ({_spec.Accelerator})");
        var info = new ProcessStartInfo { UseShellExecute = false };
        string? setpriv = FindOnPath("setpriv");
        if (setpriv is not null)
        {
            // If this runtime dies, the kernel kills the VMM: no guest is ever left unowned.
            info.FileName = setpriv;
            info.ArgumentList.Add("--pdeathsig");
            info.ArgumentList.Add("KILL");
            info.ArgumentList.Add("--");
            info.ArgumentList.Add(_spec.VmmPath);
        }
        else
        {
            info.FileName = _spec.VmmPath;
        }

        foreach (string arg in _spec.VmmArguments)
        {
            info.ArgumentList.Add(arg);
        }

        _vmm = Process.Start(info) ?? throw new InvalidOperationException("The VMM did not start.");
        WriteStatus("Starting");
    }

    public async Task<int> RunAsync()
    {
        using var listener = Listen();
        _ = AcceptClientsAsync(listener);
        _ = ConnectAgentAsync();
        using var signal = System.Runtime.InteropServices.PosixSignalRegistration.Create(
            System.Runtime.InteropServices.PosixSignal.SIGTERM, context =>
            {
                context.Cancel = true;
                RequestStop(DefaultStopTimeout, "runtime received SIGTERM");
            });
        var clock = Stopwatch.StartNew();
        Task exited = _vmm!.WaitForExitAsync();
        Task boot = await Task.WhenAny(_ready.Task, exited, Task.Delay(_spec.BootTimeoutMilliseconds))
            .ConfigureAwait(false);
        if (boot != _ready.Task)
        {
            return FailBoot(boot == exited, clock.Elapsed);
        }

        _bootMilliseconds = clock.ElapsedMilliseconds;
        Log($"agent ready in {_bootMilliseconds} ms");
        if (_spec.HoldUntilReleased)
        {
            // Still Starting to everybody else while the creating engine sets the sandbox up.
            Log("holding the sandbox for its setup");
            await Task.WhenAny(_released.Task, exited, _stopRequested.Task).ConfigureAwait(false);
        }

        if (!exited.IsCompleted && !_stopRequested.Task.IsCompleted)
        {
            WriteStatus("Running");
        }

        using var limits = new CancellationTokenSource();
        Task watch = WatchLimitsAsync(limits.Token);
        await Task.WhenAny(exited, _stopRequested.Task).ConfigureAwait(false);
        await limits.CancelAsync().ConfigureAwait(false);
        await watch.ConfigureAwait(false);
        if (!exited.IsCompleted)
        {
            WriteStatus("Stopping");
            await StopVmmAsync(exited).ConfigureAwait(false);
        }

        return Finish();
    }

    public void Dispose()
    {
        _vmm?.Dispose();
        _agent?.Dispose();
    }

    private int FailBoot(bool vmmExited, TimeSpan elapsed)
    {
        string code = vmmExited ? "GuestBootFailed" : "GuestNotReady";
        string message = vmmExited
            ? $"The VM exited (code {_vmm!.ExitCode}) after {elapsed.TotalSeconds:0.0} s, before its agent was ready."
            : $"The guest agent was not ready within {_spec.BootTimeoutMilliseconds / 1000.0:0.#} s.";
        KillVmm();
        _bootError = new ErrorMessage { Code = code, Message = message, Detail = ConsoleTail() };
        _ready.TrySetException(new PeerErrorException(_bootError));
        Log($"{code}: {message}");
        WriteStatus("Failed", code, message, _bootError.Detail);
        return 1;
    }

    private int Finish()
    {
        string tail = ConsoleTail();
        if (_stopReason is not null)
        {
            WriteStatus("Stopped", reason: _stopReason);
            return 0;
        }

        string? panic = tail.Split('\n').FirstOrDefault(l => l.Contains("Kernel panic", StringComparison.Ordinal));
        if (panic is not null || _vmm!.ExitCode != 0)
        {
            // .NET reports a process ended by a signal as 128 + its number, as shells do.
            int code = _vmm!.ExitCode;
            string reason = panic?.Trim() ?? (code > 128 && code < 160
                ? $"The VMM (pid {_vmm.Id}) was killed by signal {code - 128}."
                : $"The VMM (pid {_vmm.Id}) exited with code {code}.");
            WriteStatus("Crashed", "GuestCrashed", reason, tail);
            return 1;
        }

        WriteStatus("Stopped", reason: "The guest shut itself down.");
        return 0;
    }

    /// <summary>
    /// Stops the sandbox gracefully when it has run its maximum duration, has been idle too long,
    /// or the process it is attached to has gone; each is checked twice a second.
    /// </summary>
    private async Task WatchLimitsAsync(CancellationToken cancellationToken)
    {
        long ready = Environment.TickCount64;
        Touch();
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(500));
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
            {
                long now = Environment.TickCount64;
                if (_spec.MaxDurationMilliseconds > 0 && now - ready >= _spec.MaxDurationMilliseconds)
                {
                    StopForLimit($"it reached its maximum duration of {Seconds(_spec.MaxDurationMilliseconds)}");
                    return;
                }

                bool idle;
                lock (_gate)
                {
                    idle = _clients == 0 && _routes.Count == 0;
                }

                if (_spec.IdleTimeoutMilliseconds > 0 && idle
                    && now - Interlocked.Read(ref _lastActivity) >= _spec.IdleTimeoutMilliseconds)
                {
                    StopForLimit($"it was idle for {Seconds(_spec.IdleTimeoutMilliseconds)}");
                    return;
                }

                if (_spec.AttachedProcessId is int pid && !AttachedProcessAlive(pid, _spec.AttachedProcessStartTicks))
                {
                    StopForLimit($"the process it was attached to (pid {pid}) exited");
                    return;
                }
            }
        }
        catch (OperationCanceledException)
        {
            // The sandbox is stopping for another reason.
        }
    }

    private void StopForLimit(string reason)
    {
        Log($"stopping: {reason}");
        RequestStop(DefaultStopTimeout, $"Stopped because {reason}.");
    }

    private static string Seconds(long milliseconds) =>
        milliseconds % 1000 == 0 ? $"{milliseconds / 1000} s" : $"{milliseconds / 1000.0:0.###} s";

    /// <summary>
    /// Whether the attached process is still there: its /proc entry exists, it is no zombie, and
    /// it started when it did when the sandbox was attached (a reused pid is another process).
    /// </summary>
    private static bool AttachedProcessAlive(int pid, long? startTicks) =>
        HostProcessStat.Read(pid) is { Exited: false } stat
            && (startTicks is null || stat.StartTicks == startTicks);

    private void Touch() => Interlocked.Exchange(ref _lastActivity, Environment.TickCount64);

    private void LogCommand(string line)
    {
        if (_spec.CommandLogPath.Length == 0)
        {
            return;
        }

        try
        {
            lock (_commandLogGate)
            {
                File.AppendAllText(_spec.CommandLogPath, $"{DateTimeOffset.UtcNow:yyyy-MM-ddTHH:mm:ss.fffZ} {line}\n");
            }
        }
        catch (IOException ex)
        {
            Log($"command log: {ex.Message}");
        }
    }

    private void RequestStop(TimeSpan timeout, string reason)
    {
        lock (_gate)
        {
            _stopReason ??= reason;
            _stopTimeout = timeout;
        }

        _stopRequested.TrySetResult();
    }

    private async Task StopVmmAsync(Task exited)
    {
        if (_stopTimeout > TimeSpan.Zero && _agent is not null)
        {
            try
            {
                await _agent.WriteAsync(0, FrameType.Shutdown, new ShutdownRequest { Reason = _stopReason })
                    .ConfigureAwait(false);
            }
            catch (IOException)
            {
                // The channel is gone; the kill below still ends the VM.
            }

            if (await Task.WhenAny(exited, Task.Delay(_stopTimeout)).ConfigureAwait(false) == exited)
            {
                return;
            }

            Log($"the guest did not stop within {_stopTimeout.TotalSeconds} s; killing the VM");
            _stopReason += " (killed after the stop timeout)";
        }

        KillVmm();
        await exited.ConfigureAwait(false);
    }

    private void KillVmm()
    {
        try
        {
            _vmm?.Kill(entireProcessTree: true);
            _vmm?.WaitForExit();
        }
        catch (InvalidOperationException)
        {
            // Already exited.
        }
    }

    private Socket Listen()
    {
        // Clients take the socket's path as the sign that the runtime listens, but bind makes the
        // path before listen is called, and a connect in between is refused. So the socket is bound
        // under another name and renamed into place once it listens: a rename keeps the binding.
        string bound = _spec.ControlSocketPath + ".new";
        File.Delete(_spec.ControlSocketPath);
        File.Delete(bound);
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.Bind(new UnixDomainSocketEndPoint(bound));

        // The sandbox folder is 0700 already; the socket's own mode says the same thing twice.
        File.SetUnixFileMode(bound, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        socket.Listen(64);
        File.Move(bound, _spec.ControlSocketPath);
        return socket;
    }

    private async Task ConnectAgentAsync()
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        while (true)
        {
            try
            {
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(_spec.AgentSocketPath)).ConfigureAwait(false);
                break;
            }
            catch (SocketException)
            {
                if (_ready.Task.IsCompleted)
                {
                    return;
                }

                await Task.Delay(20).ConfigureAwait(false);
            }
        }

        var stream = new NetworkStream(socket, ownsSocket: true);
        _agent = new FrameWriter(stream);
        var reader = new FrameReader(stream);
        using var pinger = new CancellationTokenSource();
        _ = PingUntilHelloAsync(_agent, pinger.Token);
        try
        {
            while (await reader.ReadAsync().ConfigureAwait(false) is Frame frame)
            {
                if (frame.Session != 0)
                {
                    RouteToClient(frame);
                }
                else if (frame.Type == FrameType.Hello && !_ready.Task.IsCompleted)
                {
                    await pinger.CancelAsync().ConfigureAwait(false);
                    var hello = frame.Read<HelloMessage>();
                    int version = Handshake.ChooseVersion(hello.Versions);
                    await _agent.WriteAsync(0, FrameType.HelloAck,
                        new HelloAckMessage { Version = version, Peer = "msb-runtime" }).ConfigureAwait(false);
                    _ready.TrySetResult(hello);
                }
                else if (frame.Type == FrameType.Error)
                {
                    Log($"agent error: {frame.Read<ErrorMessage>().Message}");
                }
            }
        }
        catch (Exception ex) when (ex is IOException or ProtocolException or SocketException)
        {
            Log($"agent channel: {ex.Message}");
        }
    }

    private static async Task PingUntilHelloAsync(FrameWriter agent, CancellationToken cancellationToken)
    {
        // The agent may open its port before or after we connect; a ping it reads is answered
        // with a fresh hello, so neither side depends on who came first.
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                await agent.WriteAsync(0, FrameType.Ping, ReadOnlyMemory<byte>.Empty, cancellationToken)
                    .ConfigureAwait(false);
                await Task.Delay(250, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException)
        {
            // Hello arrived, or the channel closed.
        }
    }

    private void RouteToClient(Frame frame)
    {
        Route? route;
        bool ended = false;
        lock (_gate)
        {
            if (_routes.TryGetValue(frame.Session, out route) && FrameTypes.EndsSession(frame.Type))
            {
                _routes.Remove(frame.Session);
                ended = true;
            }
        }

        if (route is null)
        {
            return;
        }

        Touch();
        if (ended && route.Command is not null)
        {
            LogCommand(frame.Type switch
            {
                FrameType.Exited => $"[{frame.Session}] exited {frame.Read<ExecExited>().ExitCode} after "
                    + $"{(Environment.TickCount64 - route.StartedTicks) / 1000.0:0.000} s",
                FrameType.ExecFailed => $"[{frame.Session}] failed: {frame.Read<ErrorMessage>().Message}",
                _ => $"[{frame.Session}] ended ({frame.Type})",
            });
        }

        route.Client.Post(route.ClientSession, frame.Type, frame.Payload);
    }

    private async Task AcceptClientsAsync(Socket listener)
    {
        while (true)
        {
            Socket client;
            try
            {
                client = await listener.AcceptAsync().ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                return;
            }

            _ = ServeClientAsync(client);
        }
    }

    private async Task ServeClientAsync(Socket socket)
    {
        lock (_gate)
        {
            _clients++;
        }

        Touch();
        try
        {
            await ServeConnectedClientAsync(socket).ConfigureAwait(false);
        }
        finally
        {
            bool abandoned;
            lock (_gate)
            {
                _clients--;
                abandoned = _clients == 0 && _spec.HoldUntilReleased && _ready.Task.IsCompletedSuccessfully
                    && !_released.Task.IsCompleted;
            }

            if (abandoned)
            {
                // Nobody is left to finish the setup: a half-made sandbox is not handed out.
                Log("stopping: the session setting the sandbox up went away");
                RequestStop(TimeSpan.Zero,
                    "Stopped because its setup did not finish: the session creating it went away.");
            }

            Touch();
        }
    }

    private async Task ServeConnectedClientAsync(Socket socket)
    {
        using var stream = new NetworkStream(socket, ownsSocket: true);
        using var writer = new FrameWriter(stream);
        var link = new ClientLink(writer);
        var reader = new FrameReader(stream);
        var mine = new Dictionary<uint, uint>();
        try
        {
            HelloMessage agentHello;
            try
            {
                agentHello = await _ready.Task.ConfigureAwait(false);
            }
            catch (PeerErrorException ex)
            {
                await writer.WriteAsync(0, FrameType.Error, ex.Error).ConfigureAwait(false);
                return;
            }

            await writer.WriteAsync(0, FrameType.Hello, new HelloMessage
            {
                Versions = Handshake.SupportedVersions,
                Capabilities = agentHello.Capabilities,
                Peer = "msb-runtime",
                KernelRelease = agentHello.KernelRelease,
            }).ConfigureAwait(false);
            while (await reader.ReadAsync().ConfigureAwait(false) is Frame frame)
            {
                await HandleClientFrameAsync(frame, link, mine).ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (ex is IOException or ProtocolException or SocketException)
        {
            Log($"client: {ex.Message}");
        }
        finally
        {
            link.Complete();
            await EndClientSessionsAsync(mine).ConfigureAwait(false);
        }
    }

    private async Task HandleClientFrameAsync(Frame frame, ClientLink client, Dictionary<uint, uint> mine)
    {
        if (frame.Session == 0)
        {
            switch (frame.Type)
            {
                case FrameType.Ping:
                    await client.Writer.WriteAsync(0, FrameType.Pong, frame.Payload).ConfigureAwait(false);
                    break;
                case FrameType.Release when _spec.HoldUntilReleased && _released.TrySetResult():
                    Log("setup done");
                    break;
                case FrameType.Shutdown:
                    var request = frame.Read<ShutdownRequest>();
                    RequestStop(TimeSpan.FromMilliseconds(request.TimeoutMilliseconds),
                        request.Reason ?? "stopped by request");
                    break;
                default:
                    break;
            }

            return;
        }

        if (!mine.TryGetValue(frame.Session, out uint agentSession))
        {
            if (frame.Type is not (FrameType.ExecRequest or FrameType.SignalProcess or FrameType.FileRequest))
            {
                return;
            }

            string? command = frame.Type == FrameType.ExecRequest ? Describe(frame.Read<ExecRequest>()) : null;
            lock (_gate)
            {
                // Host-opened sessions are odd; even ids are left for sessions the guest opens.
                agentSession = _nextAgentSession;
                _nextAgentSession += 2;
                _routes[agentSession] = new Route(client, frame.Session, command, Environment.TickCount64);
            }

            mine[frame.Session] = agentSession;
            if (command is not null)
            {
                LogCommand($"[{agentSession}] started: {command}");
            }
        }

        await _agent!.WriteAsync(agentSession, frame.Type, frame.Payload).ConfigureAwait(false);
    }

    private async Task EndClientSessionsAsync(Dictionary<uint, uint> mine)
    {
        foreach (uint agentSession in mine.Values)
        {
            bool live;
            lock (_gate)
            {
                live = _routes.Remove(agentSession);
            }

            if (live && _agent is not null)
            {
                // A client that disconnects mid-command takes its process with it.
                try
                {
                    await _agent.WriteAsync(agentSession, FrameType.Signal,
                        new SignalRequest { Signal = 9, ProcessTree = true })
                        .ConfigureAwait(false);
                }
                catch (IOException)
                {
                    // The agent channel is gone too.
                }
            }
        }
    }

    private void WriteStatus(string state, string? code = null, string? reason = null, string? tail = null)
    {
        bool ended = state is "Stopped" or "Crashed" or "Failed";
        new RuntimeStatus
        {
            State = state,
            RuntimePid = Environment.ProcessId,
            VmmPid = _vmm?.Id,
            Accelerator = _spec.Accelerator,
            StartedAt = _startedAt,
            BootMilliseconds = _bootMilliseconds,
            EndedAt = ended ? DateTimeOffset.UtcNow : null,
            ErrorCode = code,
            Reason = reason,
            ConsoleTail = tail,
        }.Save(_spec.StatusPath);
    }

    private string ConsoleTail()
    {
        try
        {
            string[] lines = File.ReadAllLines(_spec.ConsoleLogPath);
            return string.Join('\n', lines.Skip(Math.Max(0, lines.Length - ConsoleTailLines)));
        }
        catch (IOException)
        {
            return "";
        }
    }

    private static string? FindOnPath(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':')
            .Select(dir => Path.Join(dir, name))
            .FirstOrDefault(File.Exists);

    private static void Log(string message) =>
        Console.Error.WriteLine($"{DateTimeOffset.UtcNow:O} {message}");

    /// <summary>A command as the log shows it: its user and directory when given, then its argv.</summary>
    private static string Describe(ExecRequest request)
    {
        string argv = string.Join(' ', request.Argv.Select(a =>
            a.Length > 0 && a.All(c => char.IsAsciiLetterOrDigit(c) || "-_./=:,+@%".Contains(c))
                ? a : "'" + a.Replace("'", "'\\''", StringComparison.Ordinal) + "'"));
        string where = (request.User is { } user ? $"as {user} " : "")
            + (request.WorkingDirectory is { } cwd ? $"in {cwd} " : "")
            + (request.Terminal is not null ? "on a terminal " : "");
        return where.Length == 0 ? argv : $"({where.TrimEnd()}) {argv}";
    }

    private sealed record Route(ClientLink Client, uint ClientSession, string? Command, long StartedTicks);
}
