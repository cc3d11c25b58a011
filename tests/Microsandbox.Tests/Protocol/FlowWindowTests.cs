using Microsandbox.Protocol;

namespace Microsandbox.Tests.Protocol;

public sealed class FlowWindowTests
{
    [Fact]
    public async Task A_take_gets_at_most_what_is_available()
    {
        var window = new FlowWindow(100);

        Assert.Equal(60, await window.TakeAsync(60));
        Assert.Equal(40, await window.TakeAsync(60));
        Assert.Equal(0, window.Available);
    }

    [Fact]
    public async Task An_empty_window_waits_for_a_grant()
    {
        var window = new FlowWindow(0);

        ValueTask<int> take = window.TakeAsync(10);
        await Task.Delay(50);
        Assert.False(take.IsCompleted);

        window.Grant(4);
        Assert.Equal(4, await take);
        Assert.Equal(0, window.Available);
    }

    [Fact]
    public async Task Grants_add_up_and_zero_or_negative_grants_do_nothing()
    {
        var window = new FlowWindow(0);

        window.Grant(0);
        window.Grant(-5);
        window.Grant(3);
        window.Grant(7);

        Assert.Equal(10, window.Available);
        Assert.Equal(10, await window.TakeAsync(64));
    }

    [Fact]
    public async Task Closing_releases_a_waiting_sender_with_zero_and_every_later_take()
    {
        var window = new FlowWindow(0);
        ValueTask<int> waiting = window.TakeAsync(10);

        window.Close();

        Assert.Equal(0, await waiting);
        window.Grant(100);
        Assert.Equal(0, await window.TakeAsync(10));
    }

    [Fact]
    public async Task A_cancelled_wait_throws_and_takes_nothing()
    {
        var window = new FlowWindow(0);
        using var cancel = new CancellationTokenSource();
        ValueTask<int> waiting = window.TakeAsync(10, cancel.Token);

        await cancel.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await waiting);
        window.Grant(5);
        Assert.Equal(5, window.Available);
    }

    [Fact]
    public async Task A_sender_never_gets_more_than_was_granted_under_concurrency()
    {
        var window = new FlowWindow(0);
        long taken = 0;
        Task sender = Task.Run(async () =>
        {
            while (Interlocked.Read(ref taken) < 1_000_000)
            {
                int got = await window.TakeAsync(4096);
                Interlocked.Add(ref taken, got);
                Assert.True(Interlocked.Read(ref taken) <= 1_000_000);
            }
        });

        for (int i = 0; i < 1000; i++)
        {
            window.Grant(1000);
            await Task.Yield();
        }

        await sender.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(1_000_000, Interlocked.Read(ref taken));
        Assert.Equal(0, window.Available);
    }

    [Fact]
    public void Takes_must_ask_for_something()
    {
        var window = new FlowWindow();

        Assert.Equal(FlowWindow.InitialBytes, window.Available);
        Assert.Throws<ArgumentOutOfRangeException>(() => window.TakeAsync(0).AsTask().GetAwaiter().GetResult());
    }
}
