using System.Diagnostics;
using Microsandbox.Engine;
using Microsandbox.Protocol;

namespace Microsandbox.Tests.Engine;

/// <summary>
/// The engine up to the point where a VM would boot: argument checks, prerequisites, the state
/// store and reconciliation against runtime processes. The runtime and QEMU are stand-ins.
/// </summary>
[Collection("Environment")]
public sealed class SandboxEngineTests : IDisposable
{
    private readonly TempHome _temp = new();
    private readonly EnvironmentScope _env = EnvironmentScope.Clean();

    public void Dispose()
    {
        _env.Dispose();
        _temp.Dispose();
    }

    private static Dictionary<string, string> Map(params (string Key, string Value)[] pairs) =>
        pairs.ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal);

    /// <summary>Guest assets and runtime that exist, so CreateAsync gets past its asset check.</summary>
    private void FakeAssets(string runtimeBody = "exit 1")
    {
        _env.Set("MSB_GUEST_DIR", _temp.FakeGuestDirectory());
        string dir = Path.Join(_temp.Scratch, "runtime");
        Directory.CreateDirectory(dir);
        string runtime = _temp.WriteScript("msb-runtime", runtimeBody);
        File.Move(runtime, Path.Join(dir, "msb-runtime"));
        _env.Set("MSB_RUNTIME_PATH", Path.Join(dir, "msb-runtime"));
    }

    /// <summary>A QEMU that only answers --version.</summary>
    private void FakeQemu() =>
        _env.Set("MSB_QEMU", _temp.WriteScript("qemu-system-x86_64", "echo 'QEMU emulator version 8.2.2'"));

    private void NoQemu() => _env.Set("MSB_QEMU", Path.Join(_temp.Scratch, "no-such-qemu"));

    private void AssertNothingLeft(params string[] keptNames)
    {
        Assert.Equal(keptNames.Order(StringComparer.Ordinal), new StateStore(_temp.Home).List().Select(r => r.Name));
        Assert.Equal(keptNames.Length, Directory.GetFileSystemEntries(_temp.Home.SandboxesDirectory).Length);
    }

    private static async Task<SandboxException> CreateFails(SandboxEngine engine, SandboxOptions options) =>
        await Assert.ThrowsAsync<SandboxException>(() => engine.CreateAsync(options, null, CancellationToken.None));

    [Theory]
    [InlineData("empty-name", "SandboxNameEmpty")]
    [InlineData("long-name", "SandboxNameTooLong")]
    [InlineData("control-name", "SandboxNameInvalid")]
    [InlineData("reserved-label", "ReservedLabelKey")]
    [InlineData("empty-label", "InvalidLabelKey")]
    [InlineData("no-cpus", "InvalidCpuCount")]
    [InlineData("negative-cpus", "InvalidCpuCount")]
    [InlineData("small-memory", "InvalidMemorySize")]
    [InlineData("zero-boot-timeout", "InvalidBootTimeout")]
    [InlineData("zero-max-duration", "InvalidMaxDuration")]
    [InlineData("negative-idle-timeout", "InvalidIdleTimeout")]
    [InlineData("attached-without-start", "AttachedWithoutStart")]
    public async Task CreateAsync_checks_arguments_before_prerequisites_and_leaves_nothing(string fault, string errorId)
    {
        // Neither guest assets nor QEMU exist: an argument error must still be the one reported.
        _env.Set("MSB_GUEST_DIR", Path.Join(_temp.Scratch, "no-guest"));
        _env.Set("MSB_RUNTIME_PATH", Path.Join(_temp.Scratch, "no-runtime"));
        NoQemu();
        var engine = new SandboxEngine(_temp.Home);
        var options = new SandboxOptions { Name = "ok-name" };
        options.Labels["fine"] = "";
        switch (fault)
        {
            case "empty-name": options.Name = ""; break;
            case "long-name": options.Name = new string('ü', 64) + "x"; break;
            case "control-name": options.Name = "bad\nname"; break;
            case "reserved-label": options.Labels["sandbox.id"] = "x"; break;
            case "empty-label": options.Labels[""] = "x"; break;
            case "no-cpus": options.Cpus = 0; break;
            case "negative-cpus": options.Cpus = -1; break;
            case "small-memory": options.MemoryMB = 63; break;
            case "zero-boot-timeout": options.BootTimeout = TimeSpan.Zero; break;
            case "zero-max-duration": options.MaxDuration = TimeSpan.Zero; break;
            case "negative-idle-timeout": options.IdleTimeout = TimeSpan.FromSeconds(-1); break;
            case "attached-without-start":
                options.NoStart = true;
                options.AttachedProcessId = Environment.ProcessId;
                break;
            default: throw new ArgumentOutOfRangeException(nameof(fault));
        }

        SandboxException ex = await CreateFails(engine, options);

        Assert.Equal(errorId, ex.ErrorId);
        AssertNothingLeft();
    }

    [Fact]
    public async Task CreateAsync_reports_the_reserved_label_key_as_target()
    {
        var engine = new SandboxEngine(_temp.Home);
        var options = new SandboxOptions { Name = "labelled" };
        options.Labels["service.port"] = "80";

        SandboxException ex = await CreateFails(engine, options);

        Assert.Equal("ReservedLabelKey", ex.ErrorId);
        Assert.Equal("service.port", ex.Target);
    }

    [Fact]
    public async Task CreateAsync_with_an_uncached_image_and_PullPolicy_Never_is_ImageNotFound()
    {
        // Never lets the test stay off the network: the cache is all it may consult.
        FakeAssets();
        FakeQemu();
        var engine = new SandboxEngine(_temp.Home);

        SandboxException ex = await CreateFails(engine,
            new SandboxOptions { Name = "py", Image = "python", PullPolicy = PullPolicy.Never });

        Assert.Equal("ImageNotFound", ex.ErrorId);
        Assert.Equal(SandboxErrorKind.NotFound, ex.Kind);
        Assert.Equal("python", ex.Target);
        AssertNothingLeft();
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("default")]
    public async Task The_default_image_passes_the_image_check(string? image)
    {
        NoQemu();
        FakeAssets();
        var engine = new SandboxEngine(_temp.Home);

        SandboxException ex = await CreateFails(engine, new SandboxOptions { Name = "img", Image = image });

        Assert.Equal("QemuNotFound", ex.ErrorId);
    }

    [Fact]
    public async Task Missing_guest_assets_are_reported_before_missing_QEMU()
    {
        string guest = Path.Join(_temp.Scratch, "empty-guest");
        Directory.CreateDirectory(guest);
        _env.Set("MSB_GUEST_DIR", guest);
        NoQemu();
        var engine = new SandboxEngine(_temp.Home);

        SandboxException ex = await CreateFails(engine, new SandboxOptions { Name = "no-assets" });

        Assert.Equal("GuestAssetsMissing", ex.ErrorId);
        Assert.Equal(SandboxErrorKind.NotInstalled, ex.Kind);
        Assert.Equal(guest, ex.Target);
        Assert.False(string.IsNullOrEmpty(ex.Hint));
        AssertNothingLeft();
    }

    [Fact]
    public async Task A_missing_runtime_is_reported_before_missing_QEMU()
    {
        string runtime = Path.Join(_temp.Scratch, "no-runtime", "msb-runtime");
        _env.Set("MSB_GUEST_DIR", _temp.FakeGuestDirectory()).Set("MSB_RUNTIME_PATH", runtime);
        NoQemu();
        var engine = new SandboxEngine(_temp.Home);

        SandboxException ex = await CreateFails(engine, new SandboxOptions { Name = "no-runtime" });

        Assert.Equal("RuntimeMissing", ex.ErrorId);
        Assert.Equal(SandboxErrorKind.NotInstalled, ex.Kind);
        Assert.Equal(runtime, ex.Target);
        AssertNothingLeft();
    }

    [Fact]
    public async Task QEMU_missing_is_NotInstalled_and_leaves_nothing()
    {
        FakeAssets();
        NoQemu();
        var engine = new SandboxEngine(_temp.Home);

        SandboxException ex = await CreateFails(engine, new SandboxOptions { Name = "no-qemu" });

        Assert.Equal("QemuNotFound", ex.ErrorId);
        Assert.Equal(SandboxErrorKind.NotInstalled, ex.Kind);
        Assert.Equal("qemu-system-x86_64", ex.Target);
        Assert.False(string.IsNullOrEmpty(ex.Hint));
        AssertNothingLeft();
    }

    [Fact]
    public async Task Replace_does_not_touch_the_old_sandbox_when_a_prerequisite_is_missing()
    {
        FakeAssets();
        NoQemu();
        var store = new StateStore(_temp.Home);
        SandboxRecord old = _temp.NewRecord("keep-me", Map(("v", "1")), SandboxState.Stopped);
        Assert.True(store.TryInsert(old));
        Directory.CreateDirectory(old.Directory);
        var engine = new SandboxEngine(_temp.Home);

        SandboxException ex = await CreateFails(engine, new SandboxOptions { Name = "keep-me", Replace = true });

        Assert.Equal("QemuNotFound", ex.ErrorId);
        Assert.Equal(old.Id, store.Find("keep-me")?.Id);
        Assert.True(Directory.Exists(old.Directory));
    }

    [Fact]
    public async Task A_taken_name_is_SandboxAlreadyExists_and_the_first_stays()
    {
        FakeAssets();
        FakeQemu();
        var store = new StateStore(_temp.Home);
        SandboxRecord first = _temp.NewRecord("taken", Map(("owner", "first")), SandboxState.Stopped);
        Assert.True(store.TryInsert(first));
        Directory.CreateDirectory(first.Directory);
        var engine = new SandboxEngine(_temp.Home);
        var options = new SandboxOptions { Name = "taken" };
        options.Labels["owner"] = "second";

        SandboxException ex = await CreateFails(engine, options);

        Assert.Equal("SandboxAlreadyExists", ex.ErrorId);
        Assert.Equal(SandboxErrorKind.AlreadyExists, ex.Kind);
        Assert.Equal("taken", ex.Target);
        SandboxRecord kept = Assert.Single(store.List());
        Assert.Equal(first.Id, kept.Id);
        Assert.Equal("first", kept.Labels["owner"]);
        Assert.Equal([first.Directory], Directory.GetFileSystemEntries(_temp.Home.SandboxesDirectory));
    }

    [Fact]
    public async Task A_runtime_that_fails_to_boot_surfaces_its_status_and_leaves_nothing()
    {
        string specCopy = Path.Join(_temp.Scratch, "spec-copy.json");
        FakeAssets($"""
            d=$(dirname "$1")
            cp "$1" '{specCopy}'
            printf '%s' '{"{"}"state":"Failed","runtimePid":0,"errorCode":"GuestBootFailed","reason":"boom from the runtime","consoleTail":"last console line"{"}"}' > "$d/status.json"
            exit 3
            """);
        FakeQemu();
        _env.Set("MSB_ACCEL", "tcg");
        var engine = new SandboxEngine(_temp.Home);
        var messages = new List<SandboxMessage>();
        var options = new SandboxOptions { Name = "Boot Me!", Cpus = 2, MemoryMB = 256 };

        SandboxException ex = await Assert.ThrowsAsync<SandboxException>(
            () => engine.CreateAsync(options, new SyncProgress(messages), CancellationToken.None));

        Assert.Equal("GuestBootFailed", ex.ErrorId);
        Assert.Equal(SandboxErrorKind.DeviceError, ex.Kind);
        Assert.Equal("boom from the runtime", ex.Message);
        Assert.Equal("last console line", ex.Detail);
        Assert.Equal("Boot Me!", ex.Target);
        AssertNothingLeft();
        Assert.Contains(messages, m => m.Level == SandboxMessageLevel.Warning && m.Text.Contains("TCG", StringComparison.Ordinal));

        // The runtime was handed a complete spec.
        RuntimeSpec spec = RuntimeSpecFile.Load(specCopy);
        Assert.Equal("Boot Me!", spec.SandboxName);
        Assert.Equal(Environment.GetEnvironmentVariable("MSB_QEMU"), spec.VmmPath);
        Assert.Equal("tcg", spec.Accelerator);
        Assert.Equal(120_000, spec.BootTimeoutMilliseconds);
        Assert.Equal(Path.GetDirectoryName(spec.StatusPath), Path.GetDirectoryName(spec.ControlSocketPath));
        Assert.StartsWith(_temp.Home.SandboxesDirectory, spec.StatusPath, StringComparison.Ordinal);
        int accel = spec.VmmArguments.ToList().IndexOf("-accel");
        Assert.Equal("tcg", spec.VmmArguments[accel + 1]);
        int append = spec.VmmArguments.ToList().IndexOf("-append");
        Assert.Contains(" msb.hostname=Boot-Me ", spec.VmmArguments[append + 1], StringComparison.Ordinal);
        Assert.EndsWith("msb.lower=msb-lower msb.upper=msb-upper", spec.VmmArguments[append + 1],
            StringComparison.Ordinal);
        Assert.Contains(spec.VmmArguments, a => a.StartsWith("virtio-blk-device,drive=disk1,serial=msb-upper",
            StringComparison.Ordinal));
        Assert.Contains("-smp", spec.VmmArguments);
        Assert.Equal("2", spec.VmmArguments[spec.VmmArguments.ToList().IndexOf("-smp") + 1]);
        Assert.Equal("256", spec.VmmArguments[spec.VmmArguments.ToList().IndexOf("-m") + 1]);
    }

    [Fact]
    public async Task A_runtime_that_dies_silently_is_RuntimeStartFailed_with_its_exit_code()
    {
        FakeAssets("exit 7");
        FakeQemu();
        _env.Set("MSB_ACCEL", "kvm");
        var engine = new SandboxEngine(_temp.Home);

        SandboxException ex = await CreateFails(engine, new SandboxOptions
        {
            Name = "silent",
            BootTimeout = TimeSpan.FromSeconds(5),
        });

        Assert.Equal("RuntimeStartFailed", ex.ErrorId);
        Assert.Contains("code 7", ex.Message, StringComparison.Ordinal);
        AssertNothingLeft();
    }

    [Fact]
    public void Get_of_an_unknown_name_is_SandboxNotFound()
    {
        var engine = new SandboxEngine(_temp.Home);
        Assert.True(new StateStore(_temp.Home).TryInsert(_temp.NewRecord("known")));

        var ex = Assert.Throws<SandboxException>(() => engine.Get("unknown"));

        Assert.Equal("SandboxNotFound", ex.ErrorId);
        Assert.Equal(SandboxErrorKind.NotFound, ex.Kind);
        Assert.Equal("unknown", ex.Target);
        Assert.Equal("SandboxNotFound", Assert.Throws<SandboxException>(() => engine.Get("KNOWN")).ErrorId);
        Assert.Equal("known", engine.Get("known").Name);
    }

    [Fact]
    public async Task Start_stop_remove_and_exec_of_an_unknown_name_are_SandboxNotFound()
    {
        var engine = new SandboxEngine(_temp.Home);

        Assert.Equal("SandboxNotFound", (await Assert.ThrowsAsync<SandboxException>(
            () => engine.StartAsync("ghost", null, CancellationToken.None))).ErrorId);
        Assert.Equal("SandboxNotFound", (await Assert.ThrowsAsync<SandboxException>(
            () => engine.StopAsync("ghost", TimeSpan.Zero, CancellationToken.None))).ErrorId);
        Assert.Equal("SandboxNotFound", (await Assert.ThrowsAsync<SandboxException>(
            () => engine.RemoveAsync("ghost", force: true, CancellationToken.None))).ErrorId);
        Assert.Equal("SandboxNotFound", (await Assert.ThrowsAsync<SandboxException>(async () =>
        {
            await foreach (ExecEvent _ in engine.ExecAsync("ghost", new SandboxCommand { Script = "true" }, CancellationToken.None))
            {
            }
        })).ErrorId);
    }

    [Fact]
    public void Get_returns_every_recorded_field()
    {
        var store = new StateStore(_temp.Home);
        SandboxRecord record = _temp.NewRecord("full", Map(("env", "prod"), ("flag", "")), SandboxState.Stopped);
        record.Reason = "stopped by request";
        record.Accelerator = "kvm";
        Assert.True(store.TryInsert(record));
        store.UpdateState(record);

        Sandbox sandbox = new SandboxEngine(_temp.Home).Get("full");

        Assert.Equal(record.Id, sandbox.Id);
        Assert.Equal(SandboxState.Stopped, sandbox.State);
        Assert.Equal("stopped by request", sandbox.Reason);
        Assert.Equal("kvm", sandbox.Accelerator);
        Assert.Null(sandbox.RuntimePid);
        Assert.Equal("", sandbox.Labels["flag"]);
        Assert.Equal(_temp.Home.SandboxDirectory(record.Id), sandbox.Directory);
        Assert.Equal(Environment.MachineName, sandbox.Host);
        Assert.Equal("full", sandbox.ToString());
    }

    [Fact]
    public void List_ANDs_label_selectors()
    {
        var store = new StateStore(_temp.Home);
        Assert.True(store.TryInsert(_temp.NewRecord("a", Map(("env", "prod"), ("tier", "web")))));
        Assert.True(store.TryInsert(_temp.NewRecord("b", Map(("env", "prod"), ("tier", "db")))));
        Assert.True(store.TryInsert(_temp.NewRecord("c", Map(("env", "dev"), ("tier", "web")))));
        Assert.True(store.TryInsert(_temp.NewRecord("d", Map(("flag", "")))));
        Assert.True(store.TryInsert(_temp.NewRecord("e", Map(("flag", "set")))));
        var engine = new SandboxEngine(_temp.Home);

        string[] Names(params string[] terms) =>
            engine.List(terms.Select(SandboxRules.ParseSelector)).Select(s => s.Name).ToArray();

        Assert.Equal(["a", "b", "c", "d", "e"], engine.List().Select(s => s.Name));
        Assert.Equal(["a", "b", "c", "d", "e"], Names());
        Assert.Equal(["a", "b"], Names("env=prod"));
        Assert.Equal(["a"], Names("env=prod", "tier=web"));
        Assert.Equal(["a", "c"], Names("tier=web"));
        Assert.Equal(["a", "b", "c"], Names("tier"));
        Assert.Equal(["b"], Names("tier", "env=prod", "tier=db"));
        Assert.Equal(["d", "e"], Names("flag"));
        Assert.Equal(["d"], Names("flag="));
        Assert.Empty(Names("env=prod", "flag"));
        Assert.Empty(Names("env=prod", "env=dev"));
        Assert.Empty(Names("missing"));
    }

    [Fact]
    public void A_running_record_whose_runtime_is_dead_is_reconciled_to_Crashed_and_persisted()
    {
        var store = new StateStore(_temp.Home);
        SandboxRecord record = _temp.NewRecord("died", state: SandboxState.Running, runtimePid: TempHome.DeadPid());
        record.Accelerator = "kvm";
        record.StartedAt = DateTimeOffset.UtcNow;
        Assert.True(store.TryInsert(record));
        store.UpdateState(record);
        var engine = new SandboxEngine(_temp.Home);

        Sandbox sandbox = engine.Get("died");

        Assert.Equal(SandboxState.Crashed, sandbox.State);
        Assert.False(string.IsNullOrWhiteSpace(sandbox.Reason));
        Assert.Contains("ended unexpectedly", sandbox.Reason, StringComparison.Ordinal);
        Assert.Null(sandbox.RuntimePid);
        Assert.Equal("kvm", sandbox.Accelerator);

        SandboxRecord stored = Assert.IsType<SandboxRecord>(new StateStore(_temp.Home).Find("died"));
        Assert.Equal(SandboxState.Crashed, stored.State);
        Assert.Equal(sandbox.Reason, stored.Reason);
        Assert.Null(stored.RuntimePid);
        Assert.Equal(SandboxState.Crashed, Assert.Single(engine.List()).State);
    }

    [Theory]
    [InlineData(SandboxState.Starting)]
    [InlineData(SandboxState.Running)]
    [InlineData(SandboxState.Stopping)]
    public void A_live_state_without_a_runtime_pid_is_Crashed(SandboxState state)
    {
        Assert.True(new StateStore(_temp.Home).TryInsert(_temp.NewRecord("no-pid", state: state)));

        Sandbox sandbox = new SandboxEngine(_temp.Home).Get("no-pid");

        Assert.Equal(SandboxState.Crashed, sandbox.State);
        Assert.Equal(SandboxState.Crashed, new StateStore(_temp.Home).Find("no-pid")?.State);
    }

    [Fact]
    public void A_reused_pid_that_is_not_a_runtime_counts_as_dead()
    {
        // The test host is alive, but its command line is not a sandbox runtime's.
        var store = new StateStore(_temp.Home);
        SandboxRecord record = _temp.NewRecord("reused", state: SandboxState.Running, runtimePid: Environment.ProcessId);
        Assert.True(store.TryInsert(record));
        store.UpdateState(record);

        Assert.Equal(SandboxState.Crashed, new SandboxEngine(_temp.Home).Get("reused").State);
    }

    [Fact]
    public void A_dead_runtime_that_recorded_a_crash_keeps_its_reason()
    {
        var store = new StateStore(_temp.Home);
        SandboxRecord record = _temp.NewRecord("panicked", state: SandboxState.Running, runtimePid: TempHome.DeadPid());
        Assert.True(store.TryInsert(record));
        store.UpdateState(record);
        Directory.CreateDirectory(record.Directory);
        new RuntimeStatus { State = "Crashed", ErrorCode = "GuestCrashed", Reason = "Kernel panic - not syncing" }
            .Save(Path.Join(record.Directory, "status.json"));

        Sandbox sandbox = new SandboxEngine(_temp.Home).Get("panicked");

        Assert.Equal(SandboxState.Crashed, sandbox.State);
        Assert.Equal("Kernel panic - not syncing", sandbox.Reason);
        Assert.Equal("Kernel panic - not syncing", store.Find("panicked")?.Reason);
    }

    [Fact]
    public void A_dead_runtime_whose_status_says_Stopped_is_reconciled_to_Stopped()
    {
        var store = new StateStore(_temp.Home);
        SandboxRecord record = _temp.NewRecord("halted", state: SandboxState.Running, runtimePid: TempHome.DeadPid());
        Assert.True(store.TryInsert(record));
        store.UpdateState(record);
        Directory.CreateDirectory(record.Directory);
        new RuntimeStatus { State = "Stopped", Reason = "the guest powered off" }
            .Save(Path.Join(record.Directory, "status.json"));

        Sandbox sandbox = new SandboxEngine(_temp.Home).Get("halted");

        Assert.Equal(SandboxState.Stopped, sandbox.State);
        Assert.Equal("the guest powered off", sandbox.Reason);
        Assert.Null(sandbox.RuntimePid);
        SandboxRecord stored = Assert.IsType<SandboxRecord>(store.Find("halted"));
        Assert.Equal(SandboxState.Stopped, stored.State);
        Assert.Equal("the guest powered off", stored.Reason);
        Assert.Null(stored.RuntimePid);
    }

    [Fact]
    public void A_stopped_record_is_not_touched_by_reconciliation()
    {
        var store = new StateStore(_temp.Home);
        SandboxRecord record = _temp.NewRecord("resting", state: SandboxState.Stopped);
        record.Reason = "stopped by request";
        Assert.True(store.TryInsert(record));
        store.UpdateState(record);
        Directory.CreateDirectory(record.Directory);
        new RuntimeStatus { State = "Running" }.Save(Path.Join(record.Directory, "status.json"));

        Sandbox sandbox = new SandboxEngine(_temp.Home).Get("resting");

        Assert.Equal(SandboxState.Stopped, sandbox.State);
        Assert.Equal("stopped by request", sandbox.Reason);
    }

    [Fact]
    public async Task A_live_runtime_is_followed_to_Running_then_killed_by_request_and_says_so()
    {
        var store = new StateStore(_temp.Home);
        SandboxRecord record = _temp.NewRecord("alive", state: SandboxState.Starting);
        using Process runtime = _temp.StartFakeRuntime(Path.Join(record.Directory, "runtime.json"));
        record.RuntimePid = runtime.Id;
        Assert.True(store.TryInsert(record));
        store.UpdateState(record);
        Directory.CreateDirectory(record.Directory);
        new RuntimeStatus { State = "Running", RuntimePid = runtime.Id }.Save(Path.Join(record.Directory, "status.json"));
        var engine = new SandboxEngine(_temp.Home);

        Sandbox sandbox = engine.Get("alive");

        Assert.Equal(SandboxState.Running, sandbox.State);
        Assert.Equal(runtime.Id, sandbox.RuntimePid);
        Assert.Equal(SandboxState.Running, store.Find("alive")?.State);

        Sandbox stopped = await engine.StopAsync("alive", TimeSpan.Zero, CancellationToken.None);

        Assert.True(runtime.WaitForExit(10_000), "the runtime was not killed");
        Assert.Equal(SandboxState.Stopped, stopped.State);
        Assert.Equal("stopped by request (killed at once, with no graceful shutdown)", stopped.Reason);
        Assert.Null(stopped.RuntimePid);
        Assert.Equal(SandboxState.Stopped, store.Find("alive")?.State);

        // Stopping again does nothing.
        Assert.Equal(SandboxState.Stopped, (await engine.StopAsync("alive", TimeSpan.Zero, CancellationToken.None)).State);
    }

    [Fact]
    public async Task Remove_refuses_a_running_sandbox_unless_forced()
    {
        var store = new StateStore(_temp.Home);
        SandboxRecord record = _temp.NewRecord("busy", Map(("k", "v")), SandboxState.Running);
        using Process runtime = _temp.StartFakeRuntime(Path.Join(record.Directory, "runtime.json"));
        record.RuntimePid = runtime.Id;
        Assert.True(store.TryInsert(record));
        store.UpdateState(record);
        Directory.CreateDirectory(record.Directory);
        var engine = new SandboxEngine(_temp.Home);

        var ex = await Assert.ThrowsAsync<SandboxException>(
            () => engine.RemoveAsync("busy", force: false, CancellationToken.None));

        Assert.Equal("SandboxRunning", ex.ErrorId);
        Assert.Equal(SandboxErrorKind.InvalidOperation, ex.Kind);
        Assert.False(runtime.HasExited);
        Assert.NotNull(store.Find("busy"));

        await engine.RemoveAsync("busy", force: true, CancellationToken.None);

        Assert.True(runtime.WaitForExit(10_000), "the runtime was not killed");
        Assert.Null(store.Find("busy"));
        Assert.False(Directory.Exists(record.Directory));
        Assert.Equal(0, _temp.Scalar("SELECT count(*) FROM labels"));
    }

    [Fact]
    public async Task Exec_in_a_sandbox_that_is_not_running_is_refused()
    {
        var store = new StateStore(_temp.Home);
        Assert.True(store.TryInsert(_temp.NewRecord("idle", state: SandboxState.Stopped)));
        var engine = new SandboxEngine(_temp.Home);

        var ex = await Assert.ThrowsAsync<SandboxException>(async () =>
        {
            await foreach (ExecEvent _ in engine.ExecAsync("idle", new SandboxCommand { Script = "true" }, CancellationToken.None))
            {
            }
        });

        Assert.Equal("SandboxNotRunning", ex.ErrorId);
        Assert.Equal(SandboxErrorKind.InvalidOperation, ex.Kind);
    }

    /// <summary>Collects progress reports on the reporting thread (Progress&lt;T&gt; posts them later).</summary>
    private sealed class SyncProgress(List<SandboxMessage> messages) : IProgress<SandboxMessage>
    {
        public void Report(SandboxMessage value)
        {
            lock (messages)
            {
                messages.Add(value);
            }
        }
    }
}
