using System.Collections.Concurrent;
using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Microsandbox.Protocol;

namespace Microsandbox.Agent;

/// <summary>Serves the host over the agent port: handshake, exec sessions, signals, shutdown.</summary>
internal sealed class AgentServer : IDisposable
{
    private static readonly string[] Capabilities =
        ["exec", "stdin", "signal", "shutdown", "user", "window", "tty", "kill", "files"];
    private readonly Stream _input;
    private readonly FrameWriter _writer;
    private readonly string _kernelRelease;
    private readonly ConcurrentDictionary<uint, ExecSession> _sessions = new();
    private readonly ConcurrentDictionary<uint, FileSession> _files = new();
    private readonly object _spawnLock = new();
    private bool _acknowledged;

    public AgentServer(Stream input, Stream output, string kernelRelease)
    {
        _input = input;
        _writer = new FrameWriter(output);
        _kernelRelease = kernelRelease;
    }

    public void Dispose() => _writer.Dispose();

    public async Task RunAsync()
    {
        _ = Task.Run(ReapOrphansAsync);
        await SendHelloAsync().ConfigureAwait(false);
        var reader = new FrameReader(_input);
        while (true)
        {
            Frame? frame;
            try
            {
                frame = await reader.ReadAsync().ConfigureAwait(false);
            }
            catch (ProtocolException ex)
            {
                // A broken stream cannot be resynchronised; say why and start over on a new reader.
                GuestInit.Log($"protocol error: {ex.Message}");
                await _writer.WriteAsync(0, FrameType.Error,
                    new ErrorMessage { Code = "ProtocolError", Message = ex.Message }).ConfigureAwait(false);
                reader = new FrameReader(_input);
                continue;
            }

            if (frame is null)
            {
                // The port reads end-of-file while no host is connected; wait for one.
                await Task.Delay(50).ConfigureAwait(false);
                continue;
            }

            try
            {
                await DispatchAsync(frame.Value).ConfigureAwait(false);
            }
            catch (ProtocolException ex)
            {
                // A malformed request fails its own session, never the agent.
                await _writer.WriteAsync(frame.Value.Session, FrameType.Error,
                    new ErrorMessage { Code = "ProtocolError", Message = ex.Message }).ConfigureAwait(false);
            }
        }
    }

    private async Task DispatchAsync(Frame frame)
    {
        switch (frame.Type)
        {
            case FrameType.Ping:
                await _writer.WriteAsync(0, FrameType.Pong, frame.Payload).ConfigureAwait(false);
                if (!_acknowledged)
                {
                    await SendHelloAsync().ConfigureAwait(false);
                }

                break;
            case FrameType.HelloAck:
                _acknowledged = true;
                break;
            case FrameType.ExecRequest:
                await StartAsync(frame.Session, frame.Read<ExecRequest>()).ConfigureAwait(false);
                break;
            case FrameType.Stdin when _sessions.TryGetValue(frame.Session, out ExecSession? session):
                session.QueueStdin(frame.Payload);
                break;
            case FrameType.SignalProcess:
                await SignalProcessAsync(frame.Session, frame.Read<ProcessSignalRequest>()).ConfigureAwait(false);
                break;
            case FrameType.Resize when _sessions.TryGetValue(frame.Session, out ExecSession? session):
                session.Resize(frame.Read<TerminalSize>());
                break;
            case FrameType.Window when _sessions.TryGetValue(frame.Session, out ExecSession? session):
                session.GrantOutput(frame.Read<WindowUpdate>().Bytes);
                break;
            case FrameType.Signal when _sessions.TryGetValue(frame.Session, out ExecSession? session):
                var signal = frame.Read<SignalRequest>();
                session.Signal(signal.Signal, signal.ProcessTree);
                break;
            case FrameType.Shutdown:
                Shutdown();
                break;
            case FrameType.FileRequest:
                StartFileSession(frame.Session, frame.Read<FileRequest>());
                break;
            case FrameType.FileData when _files.TryGetValue(frame.Session, out FileSession? file):
                file.QueueData(frame.Payload);
                break;
            case FrameType.Window when _files.TryGetValue(frame.Session, out FileSession? file):
                file.Grant(frame.Read<WindowUpdate>().Bytes);
                break;
            case FrameType.Signal when _files.TryGetValue(frame.Session, out FileSession? file):
                file.Cancel();
                break;
            default:
                // Input for a session that already ended is normal (a late stdin write); ignore it.
                break;
        }
    }

    private Task SendHelloAsync() => _writer.WriteAsync(0, FrameType.Hello, new HelloMessage
    {
        Versions = Handshake.SupportedVersions,
        Capabilities = Capabilities,
        Peer = "msb-agent " + typeof(AgentServer).Assembly.GetName().Version,
        KernelRelease = _kernelRelease,
    }).AsTask();

    private async Task StartAsync(uint id, ExecRequest request)
    {
        if (request.Argv.Count == 0)
        {
            await FailAsync(id, "EmptyCommand", "The command has no program to run.").ConfigureAwait(false);
            return;
        }

        string cwd = request.WorkingDirectory ?? "/";
        if (!Directory.Exists(cwd))
        {
            await FailAsync(id, "WorkingDirectoryNotFound", $"The working directory '{cwd}' does not exist.")
                .ConfigureAwait(false);
            return;
        }

        GuestUser? user = GuestUser.Resolve(request.User, "/etc/passwd", "/etc/group",
            out string? userError, out string? userMessage);
        if (user is null)
        {
            await FailAsync(id, userError!, userMessage!).ConfigureAwait(false);
            return;
        }

        // .NET searches the agent's own PATH, and PID 1 has none: resolve against the command's.
        string path = request.Environment.TryGetValue("PATH", out string? p) ? p : CommandStart.DefaultPath;
        string program = ResolveProgram(request.Argv[0], path);
        string? helper = PseudoTerminal.HelperPath;
        if (request.Terminal is not null)
        {
            if (helper is null)
            {
                await FailAsync(id, "TerminalUnavailable", "This guest has no terminal helper (msb-exec).")
                    .ConfigureAwait(false);
                return;
            }

            if (!File.Exists(program))
            {
                await FailAsync(id, "CommandNotFound", $"Cannot run '{request.Argv[0]}': no such file.")
                    .ConfigureAwait(false);
                return;
            }
        }

        using var start = new CommandStart(request, user, cwd, program, helper);
        Process process;
        try
        {
            lock (_spawnLock)
            {
                // The session is known before the reaper can look, so it never takes this child.
                process = start.Start();
                _sessions[id] = new ExecSession(
                    id, process, _writer, request.FlowControl, start.Terminal, start.Group, helper is not null);
            }
        }
        catch (Win32Exception ex)
        {
            start.Abandon();
            // EACCES: the user may not run the file or enter the working directory.
            string code = ex.NativeErrorCode == 13 ? "PermissionDenied" : "CommandNotFound";
            await FailAsync(id, code, $"Cannot run '{request.Argv[0]}' as {user.Name}: {ex.Message}")
                .ConfigureAwait(false);
            return;
        }

        ExecSession session = _sessions[id];
        if (await start.ReadFailureAsync().ConfigureAwait(false) is var (step, errno))
        {
            // The helper has exited; the reaper collects it once it is no session's.
            _sessions.TryRemove(id, out _);
            session.Dispose();
            const int EACCES = 13, EPERM = 1;
            string code = step is "user" || errno is EACCES or EPERM ? "PermissionDenied" : "CommandNotFound";
            string what = step == "directory"
                ? $"enter '{cwd}' to run '{request.Argv[0]}'"
                : $"run '{request.Argv[0]}'";
            await FailAsync(id, code, $"Cannot {what} as {user.Name}: {Marshal.GetPInvokeErrorMessage(errno)}.")
                .ConfigureAwait(false);
            return;
        }

        await _writer.WriteAsync(id, FrameType.ExecStarted, new ExecStarted { Pid = process.Id })
            .ConfigureAwait(false);
        if (!request.Stdin)
        {
            session.QueueStdin(ReadOnlyMemory<byte>.Empty);
        }

        _ = Task.Run(async () =>
        {
            await session.PumpAsync().ConfigureAwait(false);
            _sessions.TryRemove(id, out _);
            session.Dispose();
        });
    }

    private void StartFileSession(uint id, FileRequest request)
    {
        var session = new FileSession(id, request, _writer);
        _files[id] = session;
        _ = Task.Run(async () =>
        {
            await session.RunAsync().ConfigureAwait(false);
            _files.TryRemove(id, out _);
            session.Dispose();
        });
    }

    private static string ResolveProgram(string program, string path)
    {
        if (program.Contains('/', StringComparison.Ordinal))
        {
            return program;
        }

        foreach (string dir in path.Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Join(dir, program);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        return program;
    }

    private async Task SignalProcessAsync(uint id, ProcessSignalRequest request)
    {
        // PID 1 is the agent itself: a signal to it would end the sandbox, not a command.
        if (request.Pid <= 1 || !Directory.Exists($"/proc/{request.Pid}"))
        {
            await FailAsync(id, "ProcessNotFound", $"No process {request.Pid} runs in the sandbox.")
                .ConfigureAwait(false);
            return;
        }

        ExecSession? owner = _sessions.Values.FirstOrDefault(session => session.Pid == request.Pid);
        if (owner is not null)
        {
            owner.Signal(request.Signal, request.ProcessTree);
        }
        else
        {
            List<int> targets = request.ProcessTree
                ? [request.Pid, .. ProcessTable.DescendantsOf(request.Pid)]
                : [request.Pid];
            foreach (int pid in targets)
            {
                _ = Native.Kill(pid, request.Signal);
            }
        }

        await _writer.WriteAsync(id, FrameType.Exited, new ExecExited { ExitCode = 0 }).ConfigureAwait(false);
    }

    private Task FailAsync(uint id, string code, string message) =>
        _writer.WriteAsync(id, FrameType.ExecFailed, new ErrorMessage { Code = code, Message = message }).AsTask();

    private void Shutdown()
    {
        GuestInit.Log("shutting down");
        foreach (ExecSession session in _sessions.Values)
        {
            session.Signal(15, processTree: false);
        }

        Native.Sync();

        // With reboot=t and QEMU's -no-reboot, a restart ends the VM; it works with or without ACPI.
        Native.Check(Native.Reboot(Native.RebootCmdRestart), "reboot");
    }

    /// <summary>
    /// As PID 1 the agent inherits every orphan. .NET collects only the children it started, so
    /// the rest are collected here; the spawn lock keeps a just-started child from being taken.
    /// </summary>
    private async Task ReapOrphansAsync()
    {
        while (true)
        {
            await Task.Delay(500).ConfigureAwait(false);
            lock (_spawnLock)
            {
                int pid;
                while ((pid = Native.PeekZombie()) > 0 && !_sessions.Values.Any(s => s.Pid == pid))
                {
                    Native.Reap(pid);
                }
            }

            ControlGroup.RemoveEmpty();
        }
    }
}
