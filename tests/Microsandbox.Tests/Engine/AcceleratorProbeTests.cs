using Microsandbox.Engine;

namespace Microsandbox.Tests.Engine;

[Collection("Environment")]
public sealed class AcceleratorProbeTests : IDisposable
{
    private readonly TempHome _temp = new();
    private readonly EnvironmentScope _env = EnvironmentScope.Clean();

    public void Dispose()
    {
        _env.Dispose();
        _temp.Dispose();
    }

    /// <summary>
    /// A QEMU that answers --version and, if anything ever runs it to boot a guest, leaves a
    /// marker behind.
    /// </summary>
    private (Qemu Qemu, string Marker) TattleQemu()
    {
        string marker = Path.Join(_temp.Scratch, "qemu-was-run");
        string script = _temp.WriteScript("qemu-tattle",
            $"if [ \"$1\" = --version ]; then echo 'QEMU emulator version 8.0.0'; exit 0; fi\n" +
            $"echo \"$@\" > '{marker}'\nexit 1");
        _env.Set("MSB_QEMU", script);
        return (Qemu.Require(), marker);
    }

    [Theory]
    [InlineData("tcg", true)]
    [InlineData("kvm", false)]
    public async Task MSB_ACCEL_is_honoured_without_probing(string forced, bool emulated)
    {
        var (qemu, marker) = TattleQemu();
        _env.Set("MSB_GUEST_DIR", _temp.FakeGuestDirectory());
        _env.Set("MSB_ACCEL", forced);

        AcceleratorChoice choice = await AcceleratorProbe.ResolveAsync(
            _temp.Home, qemu, GuestAssets.Locate(), CancellationToken.None);

        Assert.Equal(forced, choice.Name);
        Assert.Equal(emulated, choice.IsEmulated);
        Assert.Equal("chosen by MSB_ACCEL", choice.Reason);
        Assert.False(choice.FromCache);
        Assert.False(File.Exists(marker), "QEMU was run to probe although MSB_ACCEL decided");
        Assert.False(File.Exists(Path.Join(_temp.Home.CacheDirectory, "accelerator.json")));
    }

    [Fact]
    public async Task MSB_ACCEL_wins_over_a_cached_probe()
    {
        var (qemu, _) = TattleQemu();
        File.WriteAllText(Path.Join(_temp.Home.CacheDirectory, "accelerator.json"),
            """{"Key":"anything","Name":"kvm","Reason":"cached"}""");
        _env.Set("MSB_ACCEL", "tcg");

        AcceleratorChoice choice = await AcceleratorProbe.ResolveAsync(
            _temp.Home, qemu, GuestAssets.Locate(), CancellationToken.None);

        Assert.Equal("tcg", choice.Name);
        Assert.False(choice.FromCache);
    }

    [Fact]
    public async Task Null_arguments_are_refused()
    {
        var (qemu, _) = TattleQemu();
        GuestAssets assets = GuestAssets.Locate();

        await Assert.ThrowsAsync<ArgumentNullException>(
            () => AcceleratorProbe.ResolveAsync(null!, qemu, assets, CancellationToken.None));
        await Assert.ThrowsAsync<ArgumentNullException>(
            () => AcceleratorProbe.ResolveAsync(_temp.Home, null!, assets, CancellationToken.None));
        await Assert.ThrowsAsync<ArgumentNullException>(
            () => AcceleratorProbe.ResolveAsync(_temp.Home, qemu, null!, CancellationToken.None));
    }

    [Fact]
    public void GuestAssets_follow_MSB_GUEST_DIR_and_MSB_RUNTIME_PATH()
    {
        string guest = _temp.FakeGuestDirectory();
        string runtime = Path.Join(_temp.Scratch, "msb-runtime");
        _env.Set("MSB_GUEST_DIR", guest).Set("MSB_RUNTIME_PATH", runtime);

        GuestAssets assets = GuestAssets.Locate();

        Assert.Equal(guest, assets.Directory);
        Assert.Equal(Path.Join(guest, "vmlinuz"), assets.KernelPath);
        Assert.Equal(Path.Join(guest, "initramfs.img"), assets.InitramfsPath);
        Assert.Equal(runtime, assets.RuntimePath);
        Assert.True(assets.GuestPresent);
        Assert.False(assets.RuntimePresent);
        Assert.Equal("RuntimeMissing", Assert.Throws<SandboxException>(assets.EnsurePresent).ErrorId);

        File.WriteAllText(runtime, "");
        Assert.Null(Record.Exception(assets.EnsurePresent));
    }
}
