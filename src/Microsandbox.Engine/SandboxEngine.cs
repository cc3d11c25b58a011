using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsandbox.Engine.Images.Registry;
using Microsandbox.Protocol;

namespace Microsandbox.Engine;

/// <summary>
/// The SDK: creates, lists, starts, stops and removes sandboxes and runs commands in them.
/// Stateless between calls; the home folder is the only truth, shared by every process.
/// </summary>
public sealed partial class SandboxEngine
{
    private static readonly TimeSpan StopGrace = TimeSpan.FromSeconds(10);
    private readonly StateStore _store;
    private readonly ImageStore _images;

    /// <summary>Opens the engine on a home folder.</summary>
    public SandboxEngine(SandboxHome home)
    {
        Home = home ?? throw new ArgumentNullException(nameof(home));
        _store = new StateStore(home);
        Assets = GuestAssets.Locate();
        _images = new ImageStore(home, Assets, _store);
    }

    /// <summary>The home folder in use.</summary>
    public SandboxHome Home { get; }

    /// <summary>The guest assets and runtime in use.</summary>
    public GuestAssets Assets { get; }

    /// <summary>The images in the home's layer cache: list, pull ahead of time, remove.</summary>
    public ImageStore Images => _images;

    /// <summary>Every sandbox, with its state checked against its runtime, optionally filtered by labels (all must match).</summary>
    public IReadOnlyList<Sandbox> List(IEnumerable<LabelSelector>? selectors = null)
    {
        var terms = selectors?.ToList() ?? [];
        return _store.List()
            .Where(r => terms.TrueForAll(t => t.Matches(r.Labels)))
            .Select(Reconcile)
            .ToList();
    }

    /// <summary>One sandbox by exact name; throws <c>SandboxNotFound</c>.</summary>
    public Sandbox Get(string name) => Reconcile(FindRecord(name));

    /// <summary>Creates a sandbox and boots it. On any failure nothing is left behind.</summary>
    public Task<Sandbox> CreateAsync(
        SandboxOptions options, IProgress<SandboxMessage>? progress, CancellationToken cancellationToken) =>
        CreateAsync(options, progress, null, cancellationToken);

    /// <summary>
    /// Creates a sandbox and boots it, reporting the image's layer downloads to
    /// <paramref name="layers"/> when it has to pull. On any failure nothing is left behind.
    /// </summary>
    public async Task<Sandbox> CreateAsync(
        SandboxOptions options,
        IProgress<SandboxMessage>? progress,
        IProgress<LayerProgress>? layers,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        string imageName = string.IsNullOrEmpty(options.Image) ? SandboxOptions.DefaultImage : options.Image;
        string name = options.Name ?? SandboxRules.GenerateName(imageName);
        SandboxRules.ValidateName(name);
        SandboxRules.ValidateLabels(options.Labels);
        SandboxRules.ValidateResources(options.Cpus, options.MemoryMB);
        ValidateSetup(options);
        if (options.BootTimeout is { } boot && boot <= TimeSpan.Zero)
        {
            throw new SandboxException("InvalidBootTimeout", SandboxErrorKind.InvalidArgument,
                $"The boot timeout must be positive; {boot.TotalSeconds} s was asked for.", boot);
        }

        RequirePositive(options.MaxDuration, "InvalidMaxDuration", "maximum duration");
        RequirePositive(options.IdleTimeout, "InvalidIdleTimeout", "idle timeout");
        if (options.NoStart && options.AttachedProcessId is int attachTo)
        {
            throw new SandboxException("AttachedWithoutStart", SandboxErrorKind.InvalidArgument,
                "A sandbox is attached to a process for a run; one created without starting has no run to "
                + "attach. Attach it when it starts, or start it now.", attachTo);
        }

        Assets.EnsurePresent();
        Qemu qemu = Qemu.Require();

        // Held until the new sandbox is up or gone again; a session that creates or replaces the
        // same name at once waits, then finds the name taken. Taken before the cache lock below,
        // as a start takes them, so that the two locks are always taken in one order.
        using FileStream locked = await LockAsync(name, progress, cancellationToken).ConfigureAwait(false);

        // The image comes first: a pull that fails leaves no sandbox record behind. The cache stays
        // held shared until the record is in, so an image removal sees this sandbox using it.
        using HeldImage held = await _images
            .ResolveAndHoldAsync(imageName, options.PullPolicy, progress, layers, cancellationToken)
            .ConfigureAwait(false);
        SandboxImage image = held.Image;
        var environment = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string pair in image.Config?.Env ?? [])
        {
            int eq = pair.IndexOf('=', StringComparison.Ordinal);
            environment[eq < 0 ? pair : pair[..eq]] = eq < 0 ? "" : pair[(eq + 1)..];
        }

        foreach (var (key, value) in options.Environment)
        {
            environment[key] = value;
        }

        if (options.Scripts.Count > 0)
        {
            AddScriptPath(environment);
        }

        // Image labels come in unless reserved; the user's win on a collision.
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in image.Config?.Labels ?? new Dictionary<string, string>())
        {
            if (!SandboxRules.ReservedLabelPrefixes.Any(p => key.StartsWith(p, StringComparison.Ordinal)))
            {
                labels[key] = value;
            }
        }

        foreach (var (key, value) in options.Labels)
        {
            labels[key] = value;
        }

        if (options.Replace && _store.Find(name) is { } existing)
        {
            progress?.Report(new(SandboxMessageLevel.Verbose, $"Replacing sandbox '{name}'."));
            await StopRecordAsync(
                    Reconcile(existing), existing, options.ReplaceTimeout, "replaced", progress, cancellationToken)
                .ConfigureAwait(false);
            Delete(existing);
        }

        string id = Guid.NewGuid().ToString("N")[..16];
        var record = new SandboxRecord
        {
            Id = id,
            Name = name,
            Image = image.Reference,
            BasePath = image.BasePath,
            RootFormat = image.Disk?.Format,
            RootPartition = image.Disk?.Partition,
            Cpus = options.Cpus,
            MemoryMB = options.MemoryMB,
            Shell = options.Shell,
            WorkingDirectory = options.WorkingDirectory
                ?? (string.IsNullOrEmpty(image.Config?.WorkingDir) ? "/" : image.Config.WorkingDir),
            User = options.User ?? image.Config?.User,
            Entrypoint = image.Config?.Entrypoint ?? [],
            Cmd = image.Config?.Cmd ?? [],
            Environment = environment,
            Labels = labels,
            CreatedAt = DateTimeOffset.UtcNow,
            BootTimeoutMilliseconds = options.BootTimeout is { } t ? (int)t.TotalMilliseconds : null,
            MaxDurationMilliseconds = options.MaxDuration is { } max ? (long)max.TotalMilliseconds : null,
            IdleTimeoutMilliseconds = options.IdleTimeout is { } idle ? (long)idle.TotalMilliseconds : null,
            Directory = Home.SandboxDirectory(id),
            State = SandboxState.Created,
        };
        if (!_store.TryInsert(record))
        {
            throw new SandboxException("SandboxAlreadyExists", SandboxErrorKind.AlreadyExists,
                $"A sandbox named '{name}' already exists. Use -Replace to replace it.", name);
        }

        held.Dispose();
        try
        {
            SandboxHome.CreatePrivateDirectory(record.Directory);
            if (image.Disk is { } disk)
            {
                // Once, here: the root disk carries what the sandbox writes from start to start.
                progress?.Report(new(SandboxMessageLevel.Verbose, disk.Format == DiskImageFormat.Qcow2
                    ? $"Creating a qcow2 overlay on '{disk.Path}'." : $"Copying the raw disk image '{disk.Path}'."));
                await RootDisks.CreateRootDiskAsync(disk, record.Directory, name, cancellationToken)
                    .ConfigureAwait(false);
            }

            if (options.NoStart)
            {
                if (options.Scripts.Count > 0 || options.Patches.Count > 0)
                {
                    PendingSetup.Save(PendingSetup.From(options), PendingSetupFile(record));
                }

                progress?.Report(new(SandboxMessageLevel.Verbose,
                    $"Created sandbox '{name}' without starting it; Start-Sandbox boots it."));
                return Reconcile(record);
            }

            // The agent is PID 1 and runs nothing of the image on its own, and the runtime holds
            // the sandbox Starting until the setup is done, so no command sees the root before
            // its scripts and patches are in place.
            Func<SandboxConnection, CancellationToken, Task>? setup =
                options.Scripts.Count > 0 || options.Patches.Count > 0
                    ? (connection, token) => ApplySetupAsync(
                        connection, name, options.Scripts, options.Patches, progress, token)
                    : null;
            return await BootAsync(record, qemu, options.AttachedProcessId, setup, progress, cancellationToken)
                .ConfigureAwait(false);
        }
        catch
        {
            // A sandbox that failed to set up is not kept half-made: its VM goes with its record.
            try
            {
                await StopRecordAsync(
                        Reconcile(record), record, TimeSpan.Zero, "setup failed", null, CancellationToken.None)
                    .ConfigureAwait(false);
            }
            finally
            {
                Delete(record);
            }
            throw;
        }
    }

    private static void RequirePositive(TimeSpan? limit, string errorId, string what)
    {
        if (limit is { } span && span <= TimeSpan.Zero)
        {
            throw new SandboxException(errorId, SandboxErrorKind.InvalidArgument,
                $"The {what} must be positive; {span.TotalSeconds} s was asked for.", span);
        }
    }

    /// <summary>Starts a stopped or crashed sandbox; a running one is returned as it is.</summary>
    public async Task<Sandbox> StartAsync(
        string name, IProgress<SandboxMessage>? progress, CancellationToken cancellationToken)
    {
        using FileStream held = await LockExistingAsync(name, progress, cancellationToken).ConfigureAwait(false);
        return await StartRecordAsync(FindRecord(name), progress, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Stops a sandbox gracefully (see <see cref="StopAsync(string, TimeSpan, CancellationToken)"/>)
    /// and starts it again, as one operation: no other session's start or stop comes in between.
    /// </summary>
    public async Task<Sandbox> RestartAsync(
        string name, TimeSpan timeout, IProgress<SandboxMessage>? progress, CancellationToken cancellationToken)
    {
        using FileStream held = await LockExistingAsync(name, progress, cancellationToken).ConfigureAwait(false);
        SandboxRecord record = FindRecord(name);
        await StopRecordAsync(Reconcile(record), record, timeout, "restarted", progress, cancellationToken)
            .ConfigureAwait(false);
        return await StartRecordAsync(record, progress, cancellationToken).ConfigureAwait(false);
    }

    private async Task<Sandbox> StartRecordAsync(
        SandboxRecord record, IProgress<SandboxMessage>? progress, CancellationToken cancellationToken)
    {
        string name = record.Name;
        Sandbox current = Reconcile(record);
        if (current.State is SandboxState.Running or SandboxState.Starting)
        {
            return current;
        }

        if (current.State == SandboxState.Stopping)
        {
            throw new SandboxException("SandboxStopping", SandboxErrorKind.InvalidOperation,
                $"The sandbox '{name}' is still stopping; start it once it has stopped.", name);
        }

        // Host prerequisites first: a missing QEMU says nothing about the sandbox itself.
        Assets.EnsurePresent();
        Qemu qemu = Qemu.Require();

        // A sandbox created without starting has its scripts and patches still to come, on the
        // first start that gets through them; until then the file that holds them stays.
        string pendingFile = PendingSetupFile(record);
        PendingSetup? pending = PendingSetup.Load(pendingFile, name);
        Func<SandboxConnection, CancellationToken, Task>? setup = pending is null ? null
            : (connection, token) => ApplySetupAsync(
                connection, name, pending.Scripts, pending.Patches, progress, token);
        try
        {
            Sandbox started = await BootAsync(record, qemu, null, setup, progress, cancellationToken)
                .ConfigureAwait(false);
            File.Delete(pendingFile);
            return started;
        }
        catch (SandboxException ex)
        {
            if (pending is not null)
            {
                // What of the setup went in before it failed goes too, so the next start puts all
                // of it in, once, on the root as it was made.
                await ResetRootAsync(record, cancellationToken).ConfigureAwait(false);
            }

            record.State = SandboxState.Crashed;
            record.Reason = ex.Message;
            record.RuntimePid = null;
            record.AttachedPid = null;
            _store.UpdateState(record);
            throw;
        }
    }

    /// <summary>
    /// Stops a sandbox: the guest gets <paramref name="timeout"/> to shut down, then the VM is
    /// killed. Stopping a sandbox that is not running does nothing.
    /// </summary>
    public Task<Sandbox> StopAsync(string name, TimeSpan timeout, CancellationToken cancellationToken) =>
        StopAsync(name, timeout, null, cancellationToken);

    /// <summary>
    /// Stops a sandbox as <see cref="StopAsync(string, TimeSpan, CancellationToken)"/> does, saying
    /// through <paramref name="progress"/> when it waits for another session's operation on it.
    /// </summary>
    public async Task<Sandbox> StopAsync(
        string name, TimeSpan timeout, IProgress<SandboxMessage>? progress, CancellationToken cancellationToken)
    {
        using FileStream held = await LockExistingAsync(name, progress, cancellationToken).ConfigureAwait(false);
        SandboxRecord record = FindRecord(name);
        await StopRecordAsync(Reconcile(record), record, timeout, "stopped by request", progress, cancellationToken)
            .ConfigureAwait(false);
        return Reconcile(record);
    }

    /// <summary>
    /// Waits until a sandbox is no longer starting, running or stopping, and returns it as it then is
    /// (Stopped, Crashed, or Created). Past <paramref name="timeout"/> (null: no limit) it throws
    /// <c>WaitSandboxTimeout</c>.
    /// </summary>
    public async Task<Sandbox> WaitForStopAsync(string name, TimeSpan? timeout, CancellationToken cancellationToken)
    {
        // One read of the store; after that the runtime's status and process say whether it still runs.
        SandboxRecord record = FindRecord(name);
        var clock = Stopwatch.StartNew();
        while (true)
        {
            Sandbox current = Reconcile(record);
            if (!IsLive(current.State))
            {
                return current;
            }

            if (timeout is { } limit && clock.Elapsed >= limit)
            {
                throw new SandboxException("WaitSandboxTimeout", SandboxErrorKind.Timeout,
                    $"The sandbox '{name}' was still {current.State} after {limit.TotalSeconds:0.###} s.", name);
            }

            await Task.Delay(200, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Removes a sandbox and its folder; a running one only with <paramref name="force"/>.</summary>
    public Task RemoveAsync(string name, bool force, CancellationToken cancellationToken) =>
        RemoveAsync(name, force, null, cancellationToken);

    /// <summary>
    /// Removes a sandbox as <see cref="RemoveAsync(string, bool, CancellationToken)"/> does, saying
    /// through <paramref name="progress"/> when it waits for another session's operation on it.
    /// </summary>
    public async Task RemoveAsync(
        string name, bool force, IProgress<SandboxMessage>? progress, CancellationToken cancellationToken)
    {
        using FileStream held = await LockExistingAsync(name, progress, cancellationToken).ConfigureAwait(false);
        SandboxRecord record = FindRecord(name);
        Sandbox current = Reconcile(record);
        if (IsLive(current.State))
        {
            if (!force)
            {
                throw new SandboxException("SandboxRunning", SandboxErrorKind.InvalidOperation,
                    $"The sandbox '{name}' is {current.State}. Stop it first, or use -Force.", name);
            }

            await StopRecordAsync(current, record, TimeSpan.Zero, "removed", progress, cancellationToken)
                .ConfigureAwait(false);
        }

        Delete(record);
    }

    /// <summary>Runs a command in a running sandbox and yields what happens as it happens.</summary>
    public async IAsyncEnumerable<ExecEvent> ExecAsync(
        string name, SandboxCommand command, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(command);
        SandboxRecord record = FindRecord(name);
        Sandbox sandbox = Reconcile(record);
        if (sandbox.State != SandboxState.Running)
        {
            throw new SandboxException("SandboxNotRunning", SandboxErrorKind.InvalidOperation,
                $"The sandbox '{name}' is {sandbox.State}; start it with Start-Sandbox.", name);
        }

        var environment = new Dictionary<string, string>(sandbox.Environment, StringComparer.Ordinal);
        foreach (var (key, value) in command.Environment)
        {
            environment[key] = value;
        }

        KeepScriptPath(sandbox.Environment, environment);
        IReadOnlyList<string> argv = ArgvOf(sandbox, command);
        await using var connection = await SandboxConnection.ConnectAsync(
            ControlSocket(record), name, cancellationToken).ConfigureAwait(false);
        var request = new ExecRequest
        {
            Argv = argv,
            Environment = environment,
            WorkingDirectory = command.WorkingDirectory ?? sandbox.WorkingDirectory,
            User = command.User ?? sandbox.User,
            Stdin = command.StandardInput is not null,
            FlowControl = connection.SupportsFlowControl,
            Terminal = command.Terminal,
        };
        if (command.Terminal is not null && !connection.Hello.Capabilities.Contains("tty"))
        {
            throw new SandboxException("TerminalNotSupported", SandboxErrorKind.NotInstalled,
                $"The guest agent of sandbox '{name}' cannot run commands on a terminal; restart the "
                + "sandbox (Stop-Sandbox, Start-Sandbox) to boot this version's agent.", name);
        }

        await foreach (ExecEvent e in connection.ExecAsync(
            request, command.StandardInput, command.Control, command.Timeout, name, cancellationToken)
            .ConfigureAwait(false))
        {
            yield return e;
        }
    }

    /// <summary>
    /// Sends a Linux signal to a process in a running sandbox by its guest process id (as
    /// <see cref="ExecEvent.Pid"/> reports it), and with <paramref name="processTree"/> to everything
    /// it started. Throws <c>ProcessNotFound</c> when no such process runs.
    /// </summary>
    public async Task SignalAsync(
        string name, int processId, int signal, bool processTree, CancellationToken cancellationToken)
    {
        SandboxRecord record = FindRecord(name);
        Sandbox sandbox = Reconcile(record);
        if (sandbox.State != SandboxState.Running)
        {
            throw new SandboxException("SandboxNotRunning", SandboxErrorKind.InvalidOperation,
                $"The sandbox '{name}' is {sandbox.State}; no process runs in it.", name);
        }

        await using var connection = await SandboxConnection.ConnectAsync(
            ControlSocket(record), name, cancellationToken).ConfigureAwait(false);
        if (!connection.Hello.Capabilities.Contains("kill"))
        {
            throw new SandboxException("SignalNotSupported", SandboxErrorKind.NotInstalled,
                $"The guest agent of sandbox '{name}' cannot signal processes by id; restart the sandbox "
                + "(Stop-Sandbox, Start-Sandbox) to boot this version's agent.", name);
        }

        await connection.SignalProcessAsync(processId, signal, processTree, processId, cancellationToken)
            .ConfigureAwait(false);
    }

    private static IReadOnlyList<string> ArgvOf(Sandbox sandbox, SandboxCommand command)
    {
        if (!command.UseImageCommand)
        {
            return command.Arguments ?? [sandbox.Shell, "-c", command.Script ?? ""];
        }

        // As docker run: arguments replace Cmd, never the entrypoint.
        IReadOnlyList<string> tail = command.Arguments is { Count: > 0 } given ? given : sandbox.Cmd;
        List<string> argv = [.. sandbox.Entrypoint, .. tail];
        if (argv.Count == 0)
        {
            throw new SandboxException("ImageCommandMissing", SandboxErrorKind.InvalidOperation,
                $"The image of sandbox '{sandbox.Name}' ({sandbox.Image}) has no Entrypoint or Cmd; "
                + "give the command to run.", sandbox.Name);
        }

        return argv;
    }

    /// <summary>
    /// Boots the sandbox's VM through a new runtime and waits for its agent. With
    /// <paramref name="setup"/>, the runtime holds the sandbox Starting once the agent is ready,
    /// <paramref name="setup"/> runs on the boot's own connection, and only then is the sandbox
    /// released to be Running.
    /// </summary>
    private async Task<Sandbox> BootAsync(
        SandboxRecord record,
        Qemu qemu,
        int? attachTo,
        Func<SandboxConnection, CancellationToken, Task>? setup,
        IProgress<SandboxMessage>? progress,
        CancellationToken cancellationToken)
    {
        long? attachedStart = null;
        if (attachTo is int attached)
        {
            attachedStart = HostProcessStat.Read(attached)?.StartTicks ?? throw new SandboxException(
                "AttachedProcessNotFound", SandboxErrorKind.NotFound,
                $"There is no process {attached} to attach the sandbox to.", attached);
        }

        AcceleratorChoice accel = await AcceleratorProbe.ResolveAsync(Home, qemu, Assets, cancellationToken)
            .ConfigureAwait(false);
        progress?.Report(new(accel.IsEmulated ? SandboxMessageLevel.Warning : SandboxMessageLevel.Verbose,
            accel.IsEmulated ? $"Using TCG emulation: {accel.Reason}." : $"Using KVM: {accel.Reason}."));
        var timeout = record.BootTimeoutMilliseconds is { } ms
            ? TimeSpan.FromMilliseconds(ms)
            : TimeSpan.FromSeconds(accel.IsEmulated ? 120 : 30);
        string dir = record.Directory;
        foreach (string stale in new[] { "status.json", "runtime.sock", "runtime.sock.new", "agent.sock", "console.log" })
        {
            File.Delete(Path.Join(dir, stale));
        }

        RootLayout root = record.RootFormat is { } format
            ? DiskRoot(record, format)
            : await LayeredRootAsync(record, progress, cancellationToken).ConfigureAwait(false);

        var spec = new RuntimeSpec
        {
            SandboxName = record.Name,
            VmmPath = qemu.Path,
            VmmArguments = Qemu.MicroVmArguments(new MicroVmConfig
            {
                Accelerator = accel.Name,
                Cpus = record.Cpus,
                MemoryMB = record.MemoryMB,
                KernelPath = Assets.KernelPath,
                InitramfsPath = Assets.InitramfsPath,
                ConsoleLogPath = Path.Join(dir, "console.log"),
                AgentSocketPath = Path.Join(dir, "agent.sock"),
                ExtraKernelArguments = [$"msb.hostname={HostName(record.Name)}", .. root.KernelArguments],
                Disks = root.Disks,
                SharedFolders = root.SharedFolders,
            }),
            AgentSocketPath = Path.Join(dir, "agent.sock"),
            ControlSocketPath = ControlSocket(record),
            ConsoleLogPath = Path.Join(dir, "console.log"),
            StatusPath = StatusFile(record),
            BootTimeoutMilliseconds = (int)timeout.TotalMilliseconds,
            Accelerator = accel.Name,
            MaxDurationMilliseconds = record.MaxDurationMilliseconds ?? 0,
            IdleTimeoutMilliseconds = record.IdleTimeoutMilliseconds ?? 0,
            AttachedProcessId = attachTo,
            AttachedProcessStartTicks = attachedStart,
            CommandLogPath = CommandLog(record),
            HoldUntilReleased = setup is not null,
        };
        string specPath = SpecFile(record);
        RuntimeSpecFile.Save(spec, specPath);

        progress?.Report(new(SandboxMessageLevel.Verbose,
            $"Booting sandbox '{record.Name}' ({record.Cpus} CPU, {record.MemoryMB} MiB, {accel.Name})."));
        var clock = Stopwatch.StartNew();
        using var runtime = Process.Start(new ProcessStartInfo(Assets.RuntimePath, specPath) { UseShellExecute = false })
            ?? throw new SandboxException("RuntimeStartFailed", SandboxErrorKind.DeviceError,
                "The sandbox runtime did not start.", record.Name);
        record.State = SandboxState.Starting;
        record.RuntimePid = runtime.Id;
        record.Accelerator = accel.Name;
        record.Reason = null;
        record.AttachedPid = attachTo;
        _store.UpdateState(record);
        try
        {
            await using var connection = await WaitForRuntimeAsync(record, runtime, timeout, cancellationToken)
                .ConfigureAwait(false);
            progress?.Report(new(SandboxMessageLevel.Verbose,
                $"Agent ready in {clock.ElapsedMilliseconds} ms (guest kernel {connection.Hello.KernelRelease})."));
            if (setup is not null)
            {
                await setup(connection, cancellationToken).ConfigureAwait(false);
                await connection.ReleaseAsync(cancellationToken).ConfigureAwait(false);
                await WaitForReleaseAsync(record, runtime, cancellationToken).ConfigureAwait(false);
            }
        }
        catch
        {
            KillRuntime(runtime);
            throw;
        }

        record.State = SandboxState.Running;
        record.StartedAt = DateTimeOffset.UtcNow;
        _store.UpdateState(record);
        return Reconcile(record);
    }

    /// <summary>
    /// The root of a sandbox made from a disk image: its own disk, mounted whole, no overlay. A
    /// qcow2 overlay reads through to the original, so that must still be where it was.
    /// </summary>
    private static RootLayout DiskRoot(SandboxRecord record, DiskImageFormat format)
    {
        string disk = RootDisks.RootDiskPath(record.Directory, format);
        if (format == DiskImageFormat.Qcow2 && (record.BasePath is null || !File.Exists(record.BasePath)))
        {
            throw new SandboxException("DiskImageMissing", SandboxErrorKind.NotFound,
                $"The sandbox '{record.Name}' is an overlay on the disk image '{record.BasePath}', which is gone. "
                + "Put the image back where it was, or remove the sandbox.", record.BasePath ?? record.Name);
        }

        if (!File.Exists(disk))
        {
            throw new SandboxException("RootDiskMissing", SandboxErrorKind.NotFound,
                $"The root disk of the sandbox '{record.Name}' ({disk}) is gone; remove the sandbox.", disk);
        }

        string argument = record.RootPartition is int partition
            ? $"msb.root={RootDisks.RootSerial}:{partition}" : $"msb.root={RootDisks.RootSerial}";
        string qemuFormat = format == DiskImageFormat.Qcow2 ? "qcow2" : "raw";
        return new RootLayout(
            [argument], [new VirtualDisk(disk, RootDisks.RootSerial, ReadOnly: false, qemuFormat)], []);
    }

    /// <summary>
    /// The copy-on-write root: the image's base (an EROFS disk, or a host folder over 9p) under the
    /// sandbox's upper disk.
    /// </summary>
    private async Task<RootLayout> LayeredRootAsync(
        SandboxRecord record, IProgress<SandboxMessage>? progress, CancellationToken cancellationToken)
    {
        if (record.BasePath is null || !(File.Exists(record.BasePath) || Directory.Exists(record.BasePath)))
        {
            // A cleared cache: rebuild the base from the image (pulling it again if need be).
            record.BasePath = (await _images.ResolveAsync(record.Image, PullPolicy.IfMissing, progress,
                null, cancellationToken).ConfigureAwait(false)).BasePath;
        }

        string lower = record.BasePath;
        string upper = await RootDisks.EnsureUpperDiskAsync(record.Directory, record.Name, cancellationToken)
            .ConfigureAwait(false);
        var upperDisk = new VirtualDisk(upper, RootDisks.UpperSerial, ReadOnly: false);
        return Directory.Exists(lower)
            ? new RootLayout(
                [$"msb.lower=9p:{RootDisks.LowerSerial}", $"msb.upper={RootDisks.UpperSerial}"],
                [upperDisk],
                [new SharedFolder(lower, RootDisks.LowerSerial, ReadOnly: true)])
            : new RootLayout(
                [$"msb.lower={RootDisks.LowerSerial}", $"msb.upper={RootDisks.UpperSerial}"],
                [new VirtualDisk(lower, RootDisks.LowerSerial, ReadOnly: true), upperDisk],
                []);
    }

    private static async Task<SandboxConnection> WaitForRuntimeAsync(
        SandboxRecord record, Process runtime, TimeSpan bootTimeout, CancellationToken cancellationToken)
    {
        string socket = ControlSocket(record);
        var deadline = Stopwatch.StartNew();
        while (!File.Exists(socket))
        {
            if (runtime.HasExited)
            {
                RuntimeStatus? status = RuntimeStatus.Load(StatusFile(record));
                string code = status?.ErrorCode ?? "RuntimeStartFailed";
                throw new SandboxException(code, SandboxConnection.KindOf(code),
                    status?.Reason ?? $"The sandbox runtime exited with code {runtime.ExitCode} before listening; " +
                    $"see {Path.Join(record.Directory, "runtime.log")}.", record.Name)
                {
                    Detail = status?.ConsoleTail,
                };
            }

            if (deadline.Elapsed > TimeSpan.FromSeconds(10))
            {
                throw new SandboxException("RuntimeStartFailed", SandboxErrorKind.Timeout,
                    "The sandbox runtime did not open its socket within 10 s.", record.Name);
            }

            await Task.Delay(20, cancellationToken).ConfigureAwait(false);
        }

        // The runtime enforces the boot deadline itself; this one only guards against a runtime
        // that hangs without answering.
        using var guard = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        guard.CancelAfter(bootTimeout + TimeSpan.FromSeconds(15));
        try
        {
            return await SandboxConnection.ConnectAsync(socket, record.Name, guard.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new SandboxException("GuestNotReady", SandboxErrorKind.Timeout,
                $"The sandbox runtime did not report the guest ready within {bootTimeout.TotalSeconds:0} s.",
                record.Name);
        }
        catch (SandboxException ex) when (ex.ErrorId is "RuntimeUnreachable" or "RuntimeProtocolError")
        {
            // A runtime that failed the boot may exit before it could tell this client why; its
            // status file still says.
            try
            {
                await runtime.WaitForExitAsync(cancellationToken)
                    .WaitAsync(TimeSpan.FromSeconds(10), cancellationToken).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                // Still running: the caller kills it; the status file may already hold the cause.
            }

            if (RuntimeStatus.Load(StatusFile(record)) is { ErrorCode: { } code } status)
            {
                throw new SandboxException(code,
                    SandboxConnection.KindOf(code),
                    status.Reason ?? ex.Message, record.Name, ex)
                {
                    Detail = status.ConsoleTail,
                };
            }

            throw;
        }
    }

    /// <summary>
    /// Waits until the runtime has taken the release and says Running, so that the record this
    /// engine writes next and the status every reader reconciles with agree.
    /// </summary>
    private static async Task WaitForReleaseAsync(
        SandboxRecord record, Process runtime, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        while (RuntimeStatus.Load(StatusFile(record)) is not { State: "Running" })
        {
            if (runtime.HasExited || clock.Elapsed > TimeSpan.FromSeconds(10))
            {
                throw new SandboxException("RuntimeStartFailed", SandboxErrorKind.DeviceError,
                    $"The sandbox runtime did not report the sandbox running after its setup; see "
                    + $"{Path.Join(record.Directory, "runtime.log")}.", record.Name);
            }

            await Task.Delay(20, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task StopRecordAsync(
        Sandbox current,
        SandboxRecord record,
        TimeSpan timeout,
        string reason,
        IProgress<SandboxMessage>? progress,
        CancellationToken cancellationToken)
    {
        if (!IsLive(current.State) || record.RuntimePid is not int pid)
        {
            return;
        }

        bool graceful = current.State == SandboxState.Running && timeout > TimeSpan.Zero;
        if (graceful)
        {
            progress?.Report(new(SandboxMessageLevel.Verbose,
                $"Asking the guest of '{record.Name}' to shut down; the VM is killed if it has not "
                + $"within {timeout.TotalSeconds:0.###} s."));
            try
            {
                await using var connection = await SandboxConnection.ConnectAsync(
                    ControlSocket(record), record.Name, cancellationToken).ConfigureAwait(false);
                await connection.RequestShutdownAsync(timeout, reason, cancellationToken).ConfigureAwait(false);
            }
            catch (SandboxException)
            {
                // Unreachable runtime: the kill below ends it.
            }

            // The runtime kills the VM itself when the timeout passes; the extra grace covers
            // the runtime's own exit.
            var clock = Stopwatch.StartNew();
            while (RuntimeAlive(pid, record) && clock.Elapsed < timeout + StopGrace)
            {
                await Task.Delay(50, cancellationToken).ConfigureAwait(false);
            }
        }

        bool killed = RuntimeAlive(pid, record);
        if (killed)
        {
            progress?.Report(new(SandboxMessageLevel.Verbose, graceful
                ? $"Killing the VM of '{record.Name}': its runtime (pid {pid}) has not exited in time."
                : $"Killing the VM of '{record.Name}' at once (runtime pid {pid}), with no graceful shutdown."));

            // Killing the runtime kills its VMM through the parent-death signal.
            try
            {
                using var process = Process.GetProcessById(pid);
                process.Kill();
            }
            catch (Exception ex) when (ex is ArgumentException or InvalidOperationException)
            {
                // Already gone.
            }

            while (RuntimeAlive(pid, record))
            {
                await Task.Delay(20, cancellationToken).ConfigureAwait(false);
            }
        }

        record.State = SandboxState.Stopped;
        record.RuntimePid = null;
        record.AttachedPid = null;
        record.Reason = RuntimeStatus.Load(StatusFile(record)) is { State: "Stopped" } status
            ? status.Reason
            : killed ? $"{reason} (killed{(graceful ? " after the stop timeout" : " at once, with no graceful shutdown")})"
            : reason;
        _store.UpdateState(record);
    }

    /// <summary>
    /// Brings the recorded state in line with the runtime process: a live state whose runtime
    /// is gone becomes Stopped or Crashed with the runtime's own account of why. A record read
    /// before another process changed the sandbox (a restart, a stop) is never written over: the
    /// write is made only if the stored state is still the one read, else the stored one is taken
    /// and looked at again.
    /// </summary>
    private Sandbox Reconcile(SandboxRecord record)
    {
        for (int look = 0; look < 3 && IsLive(record.State); look++)
        {
            SandboxState readState = record.State;
            int? readPid = record.RuntimePid;
            RuntimeStatus? status = RuntimeStatus.Load(StatusFile(record));
            if (record.RuntimePid is int pid && RuntimeAlive(pid, record))
            {
                if (status is null || !Enum.TryParse(status.State, out SandboxState live) || !IsLive(live)
                    || live == record.State)
                {
                    break;
                }

                record.State = live;
            }
            else
            {
                bool clean = status?.State == "Stopped";
                record.State = clean ? SandboxState.Stopped : SandboxState.Crashed;
                record.Reason = status?.Reason ?? (clean ? null
                    : "The sandbox runtime process ended unexpectedly (it was killed or crashed).");
                record.RuntimePid = null;
                record.AttachedPid = null;
            }

            if (_store.TryUpdateState(record, readState, readPid))
            {
                break;
            }

            if (_store.FindById(record.Id) is not { } stored)
            {
                // Removed meanwhile: what was found stands, with nothing left to write it to.
                break;
            }

            record.TakeStateFrom(stored);
        }

        return new Sandbox(record, record.State, record.Reason, record.RuntimePid, record.Accelerator);
    }

    /// <summary>
    /// Holds the sandbox's lock for one operation that changes it (create, start, stop, restart,
    /// remove), across processes: two sessions never boot one sandbox twice, nor remove it under
    /// a boot; the second waits for the first and then sees what it did.
    /// </summary>
    private Task<FileStream> LockAsync(string name, IProgress<SandboxMessage>? progress, CancellationToken token)
    {
        string path = Home.SandboxLockPath(name);
        SandboxHome.CreatePrivateDirectory(Path.GetDirectoryName(path)!);
        return LockFile.TakeAsync(path, exclusive: true,
            $"Waiting for another operation on sandbox '{name}' to finish.", progress, token);
    }

    /// <summary>
    /// <see cref="LockAsync"/> for a sandbox that must exist: a name that does not is
    /// <c>SandboxNotFound</c> before any lock file is made for it. The caller reads the record
    /// again once it holds the lock, since the holder before it may have changed it.
    /// </summary>
    private Task<FileStream> LockExistingAsync(
        string name, IProgress<SandboxMessage>? progress, CancellationToken token)
    {
        _ = FindRecord(name);
        return LockAsync(name, progress, token);
    }

    private SandboxRecord FindRecord(string name) =>
        _store.Find(name) ?? throw new SandboxException("SandboxNotFound", SandboxErrorKind.NotFound,
            $"No sandbox named '{name}' exists.", name);

    private void Delete(SandboxRecord record)
    {
        _store.Delete(record.Id);
        if (Directory.Exists(record.Directory))
        {
            Directory.Delete(record.Directory, recursive: true);
        }
    }

    private static bool IsLive(SandboxState state) =>
        state is SandboxState.Starting or SandboxState.Running or SandboxState.Stopping;

    private static string ControlSocket(SandboxRecord record) => Path.Join(record.Directory, "runtime.sock");

    private static string PendingSetupFile(SandboxRecord record) => Path.Join(record.Directory, "setup.json");

    private static string StatusFile(SandboxRecord record) => Path.Join(record.Directory, "status.json");

    private static string SpecFile(SandboxRecord record) => Path.Join(record.Directory, "runtime.json");

    private static string CommandLog(SandboxRecord record) => Path.Join(record.Directory, "commands.log");

    /// <summary>
    /// Whether <paramref name="pid"/> is still this sandbox's runtime: a live process whose
    /// program is msb-runtime and whose argument is this sandbox's spec, so a reused pid is never
    /// mistaken for it (and never killed).
    /// </summary>
    private static bool RuntimeAlive(int pid, SandboxRecord record)
    {
        try
        {
            string[] argv = File.ReadAllText($"/proc/{pid}/cmdline").Split('\0');
            return HostProcessStat.Read(pid) is { Exited: false } && argv.Length >= 2 && Path.GetFileName(argv[0]) == "msb-runtime"
                && argv[1] == SpecFile(record);
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    }

    private static void KillRuntime(Process runtime)
    {
        try
        {
            if (!runtime.HasExited)
            {
                runtime.Kill(entireProcessTree: true);
            }

            runtime.WaitForExit();
        }
        catch (InvalidOperationException)
        {
            // Already exited.
        }
    }

    private static string HostName(string name)
    {
        var clean = new string(name.Select(c => char.IsAsciiLetterOrDigit(c) || c == '-' ? c : '-').ToArray());
        clean = clean.Trim('-');
        return clean.Length == 0 ? "sandbox" : clean[..Math.Min(clean.Length, 63)];
    }
}

/// <summary>What a sandbox's root is made of: the kernel arguments that tell the agent, and the devices.</summary>
internal sealed record RootLayout(
    IReadOnlyList<string> KernelArguments, IReadOnlyList<VirtualDisk> Disks, IReadOnlyList<SharedFolder> SharedFolders);

/// <summary>A command to run in a sandbox: a script for the shell, or a program with arguments.</summary>
public sealed record SandboxCommand
{
    /// <summary>Text for the sandbox's shell (<c>sh -c</c>).</summary>
    public string? Script { get; init; }

    /// <summary>Program and arguments, run without a shell; takes precedence over <see cref="Script"/>.</summary>
    public IReadOnlyList<string>? Arguments { get; init; }

    /// <summary>Environment added for this command.</summary>
    public IReadOnlyDictionary<string, string> Environment { get; init; } = new Dictionary<string, string>();

    /// <summary>Working directory for this command; null uses the sandbox's.</summary>
    public string? WorkingDirectory { get; init; }

    /// <summary>
    /// The process's standard input: each chunk read is sent as it comes, and stdin is closed when
    /// the channel completes. Null gives the process an empty stdin.
    /// </summary>
    public ChannelReader<ReadOnlyMemory<byte>>? StandardInput { get; init; }

    /// <summary>
    /// Run on a terminal of this size instead of pipes: output arrives as stdout only, and the
    /// command is the session leader of its terminal. Null runs on pipes.
    /// </summary>
    public TerminalSize? Terminal { get; init; }

    /// <summary>Resizes and signals for the running command, sent as they are read.</summary>
    public ChannelReader<SessionControl>? Control { get; init; }

    /// <summary>
    /// How long the command may run; then its process tree in the guest is killed and its exit
    /// event says it timed out. Null is no limit.
    /// </summary>
    public TimeSpan? Timeout { get; init; }

    /// <summary>The user to run as (<c>name</c>, <c>uid</c>, <c>name:group</c>); null uses the sandbox's.</summary>
    public string? User { get; init; }

    /// <summary>
    /// Run the image's own command: its Entrypoint followed by <see cref="Arguments"/>, or by its
    /// Cmd when no arguments are given, as <c>docker run</c> does.
    /// </summary>
    public bool UseImageCommand { get; init; }
}
