<?php
/**
 * Network Settings → Activelead. Variable: $network (api_key, api_url, network_wide).
 *
 * @package Activelead
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}
?>
<div class="wrap">
	<h1><?php esc_html_e( 'Activelead (network)', 'activelead' ); ?></h1>
	<?php // phpcs:ignore WordPress.Security.NonceVerification.Recommended -- display only. ?>
	<?php if ( isset( $_GET['updated'] ) && 'invalid-key' === $_GET['updated'] ) : ?>
		<div class="notice notice-error"><p><?php esc_html_e( 'The API key is not an Activelead API key; nothing was saved.', 'activelead' ); ?></p></div>
	<?php endif; ?>
	<form method="post" action="<?php echo esc_url( network_admin_url( 'edit.php?action=activelead_network' ) ); ?>">
		<?php wp_nonce_field( 'activelead_network' ); ?>
		<table class="form-table" role="presentation">
			<tr>
				<th scope="row"><label for="activelead_network_key"><?php esc_html_e( 'API key', 'activelead' ); ?></label></th>
				<td><input type="password" autocomplete="off" class="regular-text code" id="activelead_network_key" name="api_key" value="<?php echo esc_attr( (string) $network['api_key'] ); ?>" /></td>
			</tr>
			<tr>
				<th scope="row"><label for="activelead_network_url"><?php esc_html_e( 'Service URL', 'activelead' ); ?></label></th>
				<td><input type="url" class="regular-text code" id="activelead_network_url" name="api_url" value="<?php echo esc_attr( (string) $network['api_url'] ); ?>" /></td>
			</tr>
			<tr>
				<th scope="row"><?php esc_html_e( 'Scope', 'activelead' ); ?></th>
				<td><label><input type="checkbox" name="network_wide" value="1" <?php checked( ! empty( $network['network_wide'] ) ); ?> /> <?php esc_html_e( 'Use this key on every site (otherwise it is only the default for sites without their own key)', 'activelead' ); ?></label></td>
			</tr>
		</table>
		<?php submit_button(); ?>
	</form>
</div>
