<?php
/**
 * Settings → Activelead. Variables: $settings (effective settings), $own (this site's stored
 * option: the key fields show only the site's own key, never the network's), $connection
 * (Activelead_Settings::connection()), $status (last service state), $test (result of "Test
 * connection" or false).
 *
 * @package Activelead
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}
$activelead_name   = Activelead_Settings::OPTION;
$activelead_labels = array(
	'comments'     => __( 'Comments', 'activelead' ),
	'registration' => __( 'Registration', 'activelead' ),
	'login'        => __( 'Login (existing accounts, checked before the password; administrators and editors never)', 'activelead' ),
	'lostpassword' => __( 'Lost password', 'activelead' ),
	'cf7'          => __( 'Contact Form 7', 'activelead' ),
	'wpforms'      => __( 'WPForms', 'activelead' ),
	'gravityforms' => __( 'Gravity Forms', 'activelead' ),
	'elementor'    => __( 'Elementor Pro forms', 'activelead' ),
	'ninjaforms'   => __( 'Ninja Forms', 'activelead' ),
	'fluentforms'  => __( 'Fluent Forms', 'activelead' ),
	'formidable'   => __( 'Formidable Forms', 'activelead' ),
	'woocommerce'  => __( 'WooCommerce checkout and registration', 'activelead' ),
);
?>
<div class="wrap activelead-settings">
	<h1><?php esc_html_e( 'Activelead', 'activelead' ); ?></h1>
	<?php settings_errors( $activelead_name ); ?>

	<?php if ( is_array( $test ) ) : ?>
		<?php if ( $test['ok'] ) : ?>
			<div class="notice notice-success activelead-test-result"><p>
				<?php
				/* translators: %s: credit balance. */
				echo esc_html( sprintf( __( 'Connected: the API key is valid. Credit balance: %s.', 'activelead' ), null === $test['balance'] ? '?' : number_format_i18n( $test['balance'] ) ) );
				?>
			</p></div>
		<?php else : ?>
			<div class="notice notice-error activelead-test-result"><p>
				<?php
				/* translators: %s: the error. */
				echo esc_html( sprintf( __( 'Connection failed: %s', 'activelead' ), $test['error'] ) );
				?>
			</p></div>
		<?php endif; ?>
	<?php endif; ?>

	<form method="post" action="options.php">
		<?php settings_fields( Activelead_Admin::PAGE ); ?>
		<input type="hidden" name="<?php echo esc_attr( $activelead_name ); ?>[integrations_present]" value="1" />
		<table class="form-table" role="presentation">
			<tr>
				<th scope="row"><label for="activelead_api_key"><?php esc_html_e( 'API key', 'activelead' ); ?></label></th>
				<td>
					<?php if ( Activelead_Settings::is_constant( 'api_key' ) ) : ?>
						<p class="activelead-constant"><?php esc_html_e( 'Set by ACTIVELEAD_API_KEY in wp-config.php.', 'activelead' ); ?></p>
					<?php elseif ( Activelead_Settings::network_enforced() ) : ?>
						<p class="activelead-network-key"><?php esc_html_e( 'Set by the network administrator for every site of the network.', 'activelead' ); ?></p>
					<?php else : ?>
						<input type="password" autocomplete="off" class="regular-text code" id="activelead_api_key" name="<?php echo esc_attr( $activelead_name ); ?>[api_key]" value="<?php echo esc_attr( isset( $own['api_key'] ) ? (string) $own['api_key'] : '' ); ?>" />
						<p class="description"><?php esc_html_e( 'An API key of your Activelead project (al_live_…).', 'activelead' ); ?></p>
						<?php if ( 'network' === $connection['source'] ) : ?>
							<p class="description activelead-network-default"><?php esc_html_e( 'This site has no key of its own: the network\'s key is used.', 'activelead' ); ?></p>
						<?php endif; ?>
					<?php endif; ?>
				</td>
			</tr>
			<tr>
				<th scope="row"><label for="activelead_api_url"><?php esc_html_e( 'Service URL', 'activelead' ); ?></label></th>
				<td>
					<?php if ( Activelead_Settings::is_constant( 'api_url' ) ) : ?>
						<p class="activelead-constant"><?php esc_html_e( 'Set by ACTIVELEAD_API_URL in wp-config.php.', 'activelead' ); ?></p>
					<?php elseif ( Activelead_Settings::network_enforced() ) : ?>
						<p class="activelead-network-key"><code><?php echo esc_html( (string) $settings['api_url'] ); ?></code></p>
					<?php else : ?>
						<input type="url" class="regular-text code" id="activelead_api_url" name="<?php echo esc_attr( $activelead_name ); ?>[api_url]" value="<?php echo esc_attr( isset( $own['api_url'] ) ? (string) $own['api_url'] : '' ); ?>" placeholder="<?php echo esc_attr( (string) $settings['api_url'] ); ?>" />
					<?php endif; ?>
				</td>
			</tr>
			<tr>
				<th scope="row"><?php esc_html_e( 'Mode', 'activelead' ); ?></th>
				<td>
					<label><input type="radio" name="<?php echo esc_attr( $activelead_name ); ?>[mode]" value="enforce" <?php checked( $settings['mode'], 'enforce' ); ?> /> <?php esc_html_e( 'Enforce: act on the decision', 'activelead' ); ?></label><br />
					<label><input type="radio" name="<?php echo esc_attr( $activelead_name ); ?>[mode]" value="monitor" <?php checked( $settings['mode'], 'monitor' ); ?> /> <?php esc_html_e( 'Monitor: score and record only', 'activelead' ); ?></label>
				</td>
			</tr>
			<tr>
				<th scope="row"><label for="activelead_blocked_action"><?php esc_html_e( 'Blocked submissions', 'activelead' ); ?></label></th>
				<td>
					<select id="activelead_blocked_action" name="<?php echo esc_attr( $activelead_name ); ?>[blocked_action]">
						<option value="spam" <?php selected( $settings['blocked_action'], 'spam' ); ?>><?php esc_html_e( 'Mark as spam', 'activelead' ); ?></option>
						<option value="hold" <?php selected( $settings['blocked_action'], 'hold' ); ?>><?php esc_html_e( 'Hold for moderation', 'activelead' ); ?></option>
						<option value="reject" <?php selected( $settings['blocked_action'], 'reject' ); ?>><?php esc_html_e( 'Reject with a message', 'activelead' ); ?></option>
					</select>
					<p class="description"><?php esc_html_e( 'Comments follow this; forms without a spam folder (registration, most form plugins) are rejected.', 'activelead' ); ?></p>
					<p><input type="text" class="large-text" name="<?php echo esc_attr( $activelead_name ); ?>[blocked_message]" value="<?php echo esc_attr( (string) $settings['blocked_message'] ); ?>" aria-label="<?php esc_attr_e( 'Message shown when a submission is rejected', 'activelead' ); ?>" /></p>
				</td>
			</tr>
			<tr>
				<th scope="row"><?php esc_html_e( 'Protect', 'activelead' ); ?></th>
				<td>
					<?php foreach ( $activelead_labels as $activelead_key => $activelead_label ) : ?>
						<label><input type="checkbox" name="<?php echo esc_attr( $activelead_name ); ?>[integrations][<?php echo esc_attr( $activelead_key ); ?>]" value="1" <?php checked( ! empty( $settings['integrations'][ $activelead_key ] ) ); ?> /> <?php echo esc_html( $activelead_label ); ?></label><br />
					<?php endforeach; ?>
				</td>
			</tr>
			<tr>
				<th scope="row"><?php esc_html_e( 'When the service is down', 'activelead' ); ?></th>
				<td>
					<label><input type="radio" name="<?php echo esc_attr( $activelead_name ); ?>[fail_mode]" value="open" <?php checked( $settings['fail_mode'], 'open' ); ?> /> <?php esc_html_e( 'Fail open: accept submissions', 'activelead' ); ?></label><br />
					<label><input type="radio" name="<?php echo esc_attr( $activelead_name ); ?>[fail_mode]" value="closed" <?php checked( $settings['fail_mode'], 'closed' ); ?> /> <?php esc_html_e( 'Fail closed: refuse submissions', 'activelead' ); ?></label><br />
					<label><?php esc_html_e( 'Timeout (seconds)', 'activelead' ); ?> <input type="number" step="0.1" min="0.2" max="10" class="small-text" name="<?php echo esc_attr( $activelead_name ); ?>[timeout]" value="<?php echo esc_attr( (string) $settings['timeout'] ); ?>" /></label>
				</td>
			</tr>
			<tr>
				<th scope="row"><label for="activelead_trusted_proxies"><?php esc_html_e( 'Trusted proxies', 'activelead' ); ?></label></th>
				<td>
					<input type="text" class="regular-text code" id="activelead_trusted_proxies" name="<?php echo esc_attr( $activelead_name ); ?>[trusted_proxies]" value="<?php echo esc_attr( (string) $settings['trusted_proxies'] ); ?>" />
					<p class="description"><?php esc_html_e( 'IP addresses or CIDR ranges of your reverse proxies / CDN; only their X-Forwarded-For is believed.', 'activelead' ); ?></p>
				</td>
			</tr>
			<tr>
				<th scope="row"><label for="activelead_snippet_url"><?php esc_html_e( 'JS snippet', 'activelead' ); ?></label></th>
				<td>
					<input type="url" class="regular-text code" id="activelead_snippet_url" name="<?php echo esc_attr( $activelead_name ); ?>[snippet_url]" value="<?php echo esc_attr( (string) $settings['snippet_url'] ); ?>" placeholder="https://…/activelead.js" />
					<input type="text" class="regular-text code" name="<?php echo esc_attr( $activelead_name ); ?>[site_key]" value="<?php echo esc_attr( (string) $settings['site_key'] ); ?>" placeholder="pk_…" aria-label="<?php esc_attr_e( 'Site key', 'activelead' ); ?>" />
				</td>
			</tr>
		</table>
		<?php submit_button(); ?>
	</form>

	<form method="post" action="<?php echo esc_url( admin_url( 'admin-post.php' ) ); ?>">
		<input type="hidden" name="action" value="activelead_test_connection" />
		<?php wp_nonce_field( 'activelead_test_connection' ); ?>
		<?php submit_button( __( 'Test connection', 'activelead' ), 'secondary', 'activelead-test', false ); ?>
	</form>
</div>
