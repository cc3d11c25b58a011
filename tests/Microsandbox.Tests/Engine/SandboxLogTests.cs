using Microsandbox.Engine;
using Microsandbox.Protocol;

namespace Microsandbox.Tests.Engine;

/// <summary>
/// Reading a sandbox's logs: whole, by their last lines, and followed while the runtime lives,
/// with a console log that a new boot writes anew. The runtime is a stand-in process.
/// </summary>
[Collection("Environment")]
public sealed class SandboxLogTests : IDisposable
{
    private readonly TempHome _temp = new();

    public void Dispose() => _temp.Dispose();

    private SandboxRecord Recorded(string name, SandboxState state = SandboxState.Stopped, int? pid = null)
    {
        SandboxRecord record = _temp.NewRecord(name, state: state, runtimePid: pid);
        Assert.True(new StateStore(_temp.Home).TryInsert(record));
        Directory.CreateDirectory(record.Directory);
        return record;
    }

    private static async Task<List<string>> ReadAll(IAsyncEnumerable<string> lines)
    {
        var all = new List<string>();
        await foreach (string line in lines)
        {
            all.Add(line);
        }

        return all;
    }

    [Fact]
    public async Task A_log_is_read_whole_or_by_its_last_lines_with_crlf_and_a_partial_last_line()
    {
        SandboxRecord record = Recorded("logs");
        await File.WriteAllTextAsync(Path.Join(record.Directory, "console.log"), "one\r\ntwo\nthree\nfour");
        var engine = new SandboxEngine(_temp.Home);

        Assert.Equal(["one", "two", "three", "four"],
            await ReadAll(engine.ReadLogAsync("logs", SandboxLogKind.Console, null, false, default)));
        Assert.Equal(["three", "four"],
            await ReadAll(engine.ReadLogAsync("logs", SandboxLogKind.Console, 2, false, default)));
        Assert.Empty(await ReadAll(engine.ReadLogAsync("logs", SandboxLogKind.Console, 0, false, default)));
    }

    [Fact]
    public async Task A_log_that_does_not_exist_yet_is_empty_and_bad_arguments_have_ids()
    {
        Recorded("quiet");
        var engine = new SandboxEngine(_temp.Home);

        Assert.Empty(await ReadAll(engine.ReadLogAsync("quiet", SandboxLogKind.Command, null, true, default)));
        var missing = await Assert.ThrowsAsync<SandboxException>(
            () => ReadAll(engine.ReadLogAsync("nobody", SandboxLogKind.Console, null, false, default)));
        Assert.Equal("SandboxNotFound", missing.ErrorId);
        var tail = await Assert.ThrowsAsync<SandboxException>(
            () => ReadAll(engine.ReadLogAsync("quiet", SandboxLogKind.Console, -1, false, default)));
        Assert.Equal("InvalidLogTail", tail.ErrorId);
        Assert.Equal(SandboxErrorKind.InvalidArgument, tail.Kind);
    }

    [Fact]
    public async Task Following_yields_new_lines_and_a_new_boots_console_then_ends_with_the_runtime()
    {
        // A record whose runtime is a live stand-in: the spec path must match its argument.
        SandboxRecord record = _temp.NewRecord("follow", state: SandboxState.Running);
        Directory.CreateDirectory(record.Directory);
        string spec = Path.Join(record.Directory, "runtime.json");
        await File.WriteAllTextAsync(spec, "{}");
        using var runtime = _temp.StartFakeRuntime(spec);
        record.RuntimePid = runtime.Id;
        Assert.True(new StateStore(_temp.Home).TryInsert(record));
        new StateStore(_temp.Home).UpdateState(record);
        string console = Path.Join(record.Directory, "console.log");
        string status = Path.Join(record.Directory, "status.json");
        new RuntimeStatus { State = "Running", RuntimePid = runtime.Id, StartedAt = DateTimeOffset.UtcNow }.Save(status);
        await File.WriteAllTextAsync(console, "boot one\n");

        var engine = new SandboxEngine(_temp.Home);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await using IAsyncEnumerator<string> lines = engine
            .ReadLogAsync("follow", SandboxLogKind.Console, null, true, timeout.Token)
            .GetAsyncEnumerator(timeout.Token);
        Assert.True(await lines.MoveNextAsync());
        Assert.Equal("boot one", lines.Current);

        await File.AppendAllTextAsync(console, "still one\n");
        Assert.True(await lines.MoveNextAsync());
        Assert.Equal("still one", lines.Current);

        // A new boot: a fresh console file and a new start time in the status.
        File.Delete(console);
        new RuntimeStatus
        {
            State = "Running", RuntimePid = runtime.Id, StartedAt = DateTimeOffset.UtcNow.AddSeconds(5),
        }.Save(status);
        await File.WriteAllTextAsync(console, "boot two\nlast words");
        Assert.True(await lines.MoveNextAsync());
        Assert.Equal("boot two", lines.Current);

        runtime.Kill();
        await runtime.WaitForExitAsync(timeout.Token);
        Assert.True(await lines.MoveNextAsync());
        Assert.Equal("last words", lines.Current);
        Assert.False(await lines.MoveNextAsync());
    }
}
