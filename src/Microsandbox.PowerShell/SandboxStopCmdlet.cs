using System.Management.Automation;

namespace Microsandbox.PowerShell;

/// <summary>
/// Base of the cmdlets that stop sandboxes (Stop-Sandbox, Restart-Sandbox): the grace period a
/// guest gets to power off, -Force to kill at once, and -PassThru.
/// </summary>
public abstract class SandboxStopCmdlet : SandboxTargetCmdlet
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
    /// <para type="description">Emit the sandboxes once done.</para>
    /// </summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    /// <summary>How long a guest may take to stop: zero with -Force.</summary>
    protected TimeSpan StopTimeout => Force ? TimeSpan.Zero : TimeSpan.FromSeconds(Timeout);
}
