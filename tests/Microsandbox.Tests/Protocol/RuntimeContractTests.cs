using System.Text;
using System.Text.Json;
using Microsandbox.Protocol;

namespace Microsandbox.Tests.Protocol;

public sealed class RuntimeContractTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("msb-contract-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static RuntimeStatus FullStatus(string state) => new()
    {
        State = state,
        RuntimePid = 1234,
        VmmPid = 5678,
        Accelerator = "kvm",
        StartedAt = new DateTimeOffset(2025, 1, 2, 3, 4, 5, 678, TimeSpan.FromHours(2)),
        BootMilliseconds = 321,
        EndedAt = new DateTimeOffset(2025, 1, 2, 3, 9, 0, TimeSpan.Zero),
        ErrorCode = "GuestCrashed",
        Reason = "Kernel panic - not syncing",
        ConsoleTail = "line 1\nline 2",
    };

    [Fact]
    public void RuntimeStatus_round_trips_every_field()
    {
        string path = Path.Join(_dir, "status.json");
        RuntimeStatus sent = FullStatus("Crashed");

        sent.Save(path);
        RuntimeStatus got = Assert.IsType<RuntimeStatus>(RuntimeStatus.Load(path));

        Assert.Equal(sent.State, got.State);
        Assert.Equal(sent.RuntimePid, got.RuntimePid);
        Assert.Equal(sent.VmmPid, got.VmmPid);
        Assert.Equal(sent.Accelerator, got.Accelerator);
        Assert.Equal(sent.StartedAt, got.StartedAt);
        Assert.Equal(sent.StartedAt.Offset, got.StartedAt.Offset);
        Assert.Equal(sent.BootMilliseconds, got.BootMilliseconds);
        Assert.Equal(sent.EndedAt, got.EndedAt);
        Assert.Equal(sent.ErrorCode, got.ErrorCode);
        Assert.Equal(sent.Reason, got.Reason);
        Assert.Equal(sent.ConsoleTail, got.ConsoleTail);
    }

    [Fact]
    public void RuntimeStatus_file_is_camel_case_json_without_nulls()
    {
        string path = Path.Join(_dir, "status.json");
        var sent = new RuntimeStatus { State = "Starting", RuntimePid = 42, StartedAt = DateTimeOffset.UnixEpoch };

        sent.Save(path);
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));

        Assert.Equal(["state", "runtimePid", "startedAt"], doc.RootElement.EnumerateObject().Select(p => p.Name));
        RuntimeStatus got = Assert.IsType<RuntimeStatus>(RuntimeStatus.Load(path));
        Assert.Null(got.VmmPid);
        Assert.Null(got.EndedAt);
        Assert.Null(got.ErrorCode);
    }

    [Fact]
    public void RuntimeStatus_save_replaces_the_file_by_rename_and_leaves_no_temp_file()
    {
        string path = Path.Join(_dir, "status.json");
        FullStatus("Starting").Save(path);

        // A reader that opened the old file keeps reading the old file: the new status arrives as a
        // new file renamed over the name, never as an in-place rewrite a reader could see half of.
        using var early = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        FullStatus("Running").Save(path);

        using (var old = new StreamReader(early, Encoding.UTF8))
        {
            Assert.Contains("\"Starting\"", old.ReadToEnd(), StringComparison.Ordinal);
        }

        Assert.Equal("Running", RuntimeStatus.Load(path)?.State);
        Assert.Equal(["status.json"], Directory.GetFiles(_dir).Select(Path.GetFileName));
    }

    [Fact]
    public void RuntimeStatus_save_overwrites_a_stale_temp_file()
    {
        string path = Path.Join(_dir, "status.json");
        File.WriteAllText(path + ".tmp", "left by a crashed writer");

        FullStatus("Stopped").Save(path);

        Assert.Equal("Stopped", RuntimeStatus.Load(path)?.State);
        Assert.False(File.Exists(path + ".tmp"));
    }

    [Fact]
    public void RuntimeStatus_load_of_a_missing_file_or_folder_is_null()
    {
        Assert.Null(RuntimeStatus.Load(Path.Join(_dir, "absent.json")));
        Assert.Null(RuntimeStatus.Load(Path.Join(_dir, "no-such-dir", "status.json")));
    }

    [Theory]
    [InlineData("")]
    [InlineData("{")]
    [InlineData("{\"state\":\"Running\",\"runtimePid\":")]
    [InlineData("{\"state\":5}")]
    [InlineData("\u0000\u0001garbage")]
    [InlineData("null")]
    public void RuntimeStatus_load_of_a_corrupt_file_is_null(string content)
    {
        string path = Path.Join(_dir, "status.json");
        File.WriteAllText(path, content);

        Assert.Null(RuntimeStatus.Load(path));
    }

    [Fact]
    public void RuntimeStatus_load_of_a_folder_is_null()
    {
        Assert.Null(RuntimeStatus.Load(_dir));
    }

    [Fact]
    public void RuntimeSpec_round_trips_every_field()
    {
        string path = Path.Join(_dir, "runtime-spec.json");
        var sent = new RuntimeSpec
        {
            SandboxName = "sb-1",
            VmmPath = "/usr/bin/qemu-system-x86_64",
            VmmArguments = ["-machine", "microvm", "-append", "console=ttyS0 quiet"],
            AgentSocketPath = "/run/msb/sb-1/agent.sock",
            ControlSocketPath = "/run/msb/sb-1/control.sock",
            ConsoleLogPath = "/run/msb/sb-1/console.log",
            StatusPath = "/run/msb/sb-1/status.json",
            BootTimeoutMilliseconds = 12_345,
            Accelerator = "tcg",
            MaxDurationMilliseconds = 3_600_000,
            IdleTimeoutMilliseconds = 300_000,
            AttachedProcessId = 4242,
            AttachedProcessStartTicks = 987_654,
            CommandLogPath = "/run/msb/sb-1/commands.log",
            HoldUntilReleased = true,
        };

        RuntimeSpecFile.Save(sent, path);
        RuntimeSpec got = RuntimeSpecFile.Load(path);

        Assert.Equal(sent.SandboxName, got.SandboxName);
        Assert.Equal(sent.VmmPath, got.VmmPath);
        Assert.Equal(sent.VmmArguments, got.VmmArguments);
        Assert.Equal(sent.AgentSocketPath, got.AgentSocketPath);
        Assert.Equal(sent.ControlSocketPath, got.ControlSocketPath);
        Assert.Equal(sent.ConsoleLogPath, got.ConsoleLogPath);
        Assert.Equal(sent.StatusPath, got.StatusPath);
        Assert.Equal(sent.BootTimeoutMilliseconds, got.BootTimeoutMilliseconds);
        Assert.Equal(sent.Accelerator, got.Accelerator);
        Assert.Equal(sent.MaxDurationMilliseconds, got.MaxDurationMilliseconds);
        Assert.Equal(sent.IdleTimeoutMilliseconds, got.IdleTimeoutMilliseconds);
        Assert.Equal(sent.AttachedProcessId, got.AttachedProcessId);
        Assert.Equal(sent.AttachedProcessStartTicks, got.AttachedProcessStartTicks);
        Assert.Equal(sent.CommandLogPath, got.CommandLogPath);
        Assert.True(got.HoldUntilReleased);

        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        Assert.Equal(
            ["sandboxName", "vmmPath", "vmmArguments", "agentSocketPath", "controlSocketPath", "consoleLogPath",
                "statusPath", "bootTimeoutMilliseconds", "accelerator", "maxDurationMilliseconds",
                "idleTimeoutMilliseconds", "attachedProcessId", "attachedProcessStartTicks", "commandLogPath",
                "holdUntilReleased"],
            doc.RootElement.EnumerateObject().Select(p => p.Name));
    }

    [Fact]
    public void RuntimeSpec_boot_timeout_defaults_to_60_seconds()
    {
        string path = Path.Join(_dir, "runtime-spec.json");
        File.WriteAllText(path, """{"sandboxName":"a","vmmPath":"/q"}""");

        RuntimeSpec got = RuntimeSpecFile.Load(path);

        Assert.Equal("a", got.SandboxName);
        Assert.Equal(60_000, got.BootTimeoutMilliseconds);
        Assert.Empty(got.VmmArguments);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-5)]
    public void RuntimeSpec_boot_timeout_of_zero_or_less_means_the_default(int timeout)
    {
        string path = Path.Join(_dir, "runtime-spec.json");
        File.WriteAllText(path, $$"""{"vmmArguments":null,"bootTimeoutMilliseconds":{{timeout}}}""");

        RuntimeSpec got = RuntimeSpecFile.Load(path);

        Assert.Equal(60_000, got.BootTimeoutMilliseconds);
        Assert.Empty(got.VmmArguments);
    }

    [Fact]
    public void RuntimeSpec_load_of_json_null_is_invalid_data()
    {
        string path = Path.Join(_dir, "runtime-spec.json");
        File.WriteAllText(path, "null");

        var ex = Assert.Throws<InvalidDataException>(() => RuntimeSpecFile.Load(path));
        Assert.Contains(path, ex.Message, StringComparison.Ordinal);
    }
}
