using Microsandbox.Engine.Images.Cache;

namespace Microsandbox.Tests.Images.Cache;

public sealed class CacheLockTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("msb-cachelock-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private LayerCache Cache() => new(Path.Join(_root, "cache"));

    [Fact]
    public async Task Pulls_share_the_lock()
    {
        using CacheLock first = await CacheLock.TakeAsync(Cache(), exclusive: false, null, CancellationToken.None);

        Task<CacheLock> second = CacheLock.TakeAsync(Cache(), exclusive: false, null, CancellationToken.None);

        using CacheLock got = await second.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task A_removal_waits_for_every_pull_in_progress_and_says_so()
    {
        CacheLock pullA = await CacheLock.TakeAsync(Cache(), exclusive: false, null, CancellationToken.None);
        CacheLock pullB = await CacheLock.TakeAsync(Cache(), exclusive: false, null, CancellationToken.None);
        var messages = new List<string>();
        var progress = new Recorder(messages);

        Task<CacheLock> removal = CacheLock.TakeAsync(Cache(), exclusive: true, progress, CancellationToken.None);
        await Task.Delay(300);
        Assert.False(removal.IsCompleted);
        pullA.Dispose();
        await Task.Delay(300);
        Assert.False(removal.IsCompleted);
        pullB.Dispose();

        using CacheLock alone = await removal.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Single(messages);
        Assert.Contains("Waiting for pulls", messages[0], StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_pull_waits_for_a_removal_in_progress()
    {
        CacheLock removal = await CacheLock.TakeAsync(Cache(), exclusive: true, null, CancellationToken.None);

        Task<CacheLock> pull = CacheLock.TakeAsync(Cache(), exclusive: false, null, CancellationToken.None);
        await Task.Delay(300);
        Assert.False(pull.IsCompleted);
        removal.Dispose();

        using CacheLock got = await pull.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task A_wait_can_be_cancelled()
    {
        using CacheLock removal = await CacheLock.TakeAsync(Cache(), exclusive: true, null, CancellationToken.None);
        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));

        await Assert.ThrowsAnyAsync<OperationCanceledException>(
            () => CacheLock.TakeAsync(Cache(), exclusive: false, null, cancel.Token));
    }

    private sealed class Recorder(List<string> messages) : IProgress<Microsandbox.Engine.SandboxMessage>
    {
        public void Report(Microsandbox.Engine.SandboxMessage value) => messages.Add(value.Text);
    }
}
