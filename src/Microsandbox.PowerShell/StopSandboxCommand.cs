using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// <para type="synopsis">Stops running sandboxes.</para>
/// <para type="description">Asks each guest to sync and power off, and kills the VM if it has not stopped within the timeout. Stopping a sandbox that is not running does nothing.</para>
/// </summary>
[Cmdlet(VerbsLifecycle.Stop, "Sandbox", SupportsShouldProcess = true, DefaultParameterSetName = ByName)]
[OutputType(typeof(Sandbox))]
public sealed class StopSandboxCommand : SandboxTargetCmdlet
{
    /// <summary>
    /// <para type="description">Seconds a guest may take to stop gracefully before it is killed (default 10).</para>
    /// </summary>
    [Parameter]
    [ValidateRange(0, int.MaxValue)]
    public int Timeout { get; set; } = 10;

    /// <summary>
    /// <para type="description">Kill the VM at once, without a graceful stop.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    /// <summary>
    /// <para type="description">Emit the stopped sandboxes.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    /// <inheritdoc/>
    protected override void ProcessRecord()
    {
        TimeSpan timeout = Force ? TimeSpan.Zero : TimeSpan.FromSeconds(Timeout);
        foreach (Sandbox target in Targets())
        {
            if (!ShouldProcess(target.Name, "Stop sandbox"))
            {
                continue;
            }

            ForEach(target, s =>
            {
                WriteVerbose($"Stopping sandbox '{s.Name}'.");
                Sandbox stopped = Run((_, token) => Engine.StopAsync(s.Name, timeout, token));
                if (PassThru)
                {
                    WriteObject(stopped);
                }
            });
        }
    }
}
