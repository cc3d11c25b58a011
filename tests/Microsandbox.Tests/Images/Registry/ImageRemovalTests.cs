using Microsandbox.Engine;
using Microsandbox.Engine.Images.Cache;
using Microsandbox.Engine.Images.Registry;
using Microsandbox.Tests.Engine;

namespace Microsandbox.Tests.Images.Registry;

/// <summary>ImageStore.Remove against pulls and sandboxes of the same image.</summary>
public sealed class ImageRemovalTests : IClassFixture<OpenRegistryFixture>, IDisposable
{
    private readonly OpenRegistryFixture _registry;
    private readonly TempHome _temp = new();
    private readonly ImageStore _images;

    public ImageRemovalTests(OpenRegistryFixture registry)
    {
        _registry = registry;
        _images = new SandboxEngine(_temp.Home).Images;
    }

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task A_removal_that_waited_for_a_pull_refuses_with_ImageInUse_for_the_sandbox_it_made()
    {
        using var client = ClientFactory.Anonymous();
        string name = $"{_registry.Server.Host}/removal/in-use:1";
        await TestImage.Create(layers: 1).PushAsync(client, ImageReference.Parse(name));
        await _images.PullAsync(name, PullPolicy.IfMissing, null, null, Timing.Limit());
        LayerCache cache = LayerCache.ForHome(_temp.Home);

        // A New-Sandbox in the middle of its pull holds the cache shared, and records its sandbox.
        CacheLock pull = await CacheLock.TakeAsync(cache, exclusive: false, null, Timing.Limit());
        Task removal = Task.Run(() => _images.Remove(name, force: false, null));
        await Task.Delay(300);
        Assert.False(removal.IsCompleted, "the removal waits for the pull");
        Assert.True(new StateStore(_temp.Home).TryInsert(_temp.NewRecord("pulled-for", image: name)));
        pull.Dispose();

        SandboxException error = await Assert.ThrowsAsync<SandboxException>(() => removal);
        Assert.Equal("ImageInUse", error.ErrorId);
        Assert.Equal(name, error.Target);
        Assert.NotNull(cache.FindReference(name));
    }

    [Fact]
    public async Task An_image_resolved_for_a_new_sandbox_is_held_until_its_record_is_in()
    {
        using var client = ClientFactory.Anonymous();
        string name = $"{_registry.Server.Host}/removal/held:1";
        await TestImage.Create(layers: 1).PushAsync(client, ImageReference.Parse(name));

        // What New-Sandbox does: resolve (pulling), keep the cache held, record, then let go.
        HeldImage held = await _images.ResolveAndHoldAsync(name, PullPolicy.IfMissing, null, null, Timing.Limit());
        Task removal = Task.Run(() => _images.Remove(name, force: false, null));
        await Task.Delay(300);
        Assert.False(removal.IsCompleted, "the removal waits for the sandbox's record");
        Assert.True(new StateStore(_temp.Home).TryInsert(_temp.NewRecord("held-for", image: name)));
        held.Dispose();

        SandboxException error = await Assert.ThrowsAsync<SandboxException>(() => removal);
        Assert.Equal("ImageInUse", error.ErrorId);
        Assert.True(File.Exists(held.Image.BasePath));
    }

    [Fact]
    public async Task Resolving_without_holding_lets_the_cache_go()
    {
        using var client = ClientFactory.Anonymous();
        string name = $"{_registry.Server.Host}/removal/free:1";
        await TestImage.Create(layers: 1).PushAsync(client, ImageReference.Parse(name));
        await _images.PullAsync(name, PullPolicy.IfMissing, null, null, Timing.Limit());

        await Task.Run(() => _images.Remove(name, force: false, null)).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Null(LayerCache.ForHome(_temp.Home).FindReference(name));
    }
}
